"""certgate's own login endpoints, mounted by the gate: the page, the JSON API, the key enrolment.

The HTTP faces depend on :class:`~proxy.login.service.LoginService`, never the other way round.
"""

from __future__ import annotations

from typing import Any, Callable

from proxy.http.messages import ConnContext, RequestHead
from proxy.login.api import AuthApi
from proxy.login.pages import LOGIN_PATH, LoginPage
from proxy.login.service import LoginService
from proxy.login.webauthn_page import WEBAUTHN_PATH, EnrolPage

API_PATH = "/.certgate/api/auth"

#: what the gate calls for a request to one of these paths
LoginEndpoint = Callable[[RequestHead, ConnContext], Any]


def login_endpoints(login: LoginService) -> dict[str, LoginEndpoint]:
    """``/.certgate/login`` (page) and ``/.certgate/api/auth`` (JSON) for the gate, plus
    ``/.certgate/webauthn`` (key enrolment) when ``[webauthn]`` is configured."""
    eps: dict[str, LoginEndpoint] = {LOGIN_PATH: LoginPage(login), API_PATH: AuthApi(login)}
    if login.webauthn is not None:
        eps[WEBAUTHN_PATH] = EnrolPage(login)
    return eps
