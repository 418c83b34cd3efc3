"""``certgate cockpit-auth``: the auth command cockpit-ws runs for ``Authorization: Bearer``.

cockpit.conf::

    [bearer]
    Command = /usr/local/bin/certgate-cockpit-auth
    timeout = 30

cockpit 287 (Debian 12) execs ``Command`` as ONE path and appends the host: it does not split
arguments (newer releases do). So the command finds its config without arguments:
``--config`` if given, else ``$CERTGATE_CONFIG`` (cockpit-ws's environment is inherited),
else ``/etc/certgate/certgate.conf``. ``certgate-cockpit-auth`` is :func:`console_main`; a
wrapper script ``exec certgate cockpit-auth --config FILE "$@"`` works as well.

cockpit-ws spawns ``<command> <host>`` with stdin and stdout on one socketpair end and speaks
Cockpit's framed protocol (``<length>\\n<channel>\\n<payload>``, control messages on the empty
channel). This command:

1. sends ``{"command": "authorize", "cookie": C, "challenge": "*"}``;
2. reads the reply ``{"command": "authorize", "cookie": C, "response": "Bearer <assertion>"}``
   (cockpit >= 330 adds ``remote-peer``; 287 does not; unknown fields are ignored);
3. verifies the assertion (signature, audience, expiry), consumes its id once in the shared
   store (``[sessions] store``: sqlite or redis; ``memory`` cannot work across processes),
   checks that the account is a local user not listed in cockpit's ``disallowed-users``;
4. on failure sends ``{"command": "init", "problem": P, "message": M}`` and exits 0
   (P: ``authentication-failed`` -> HTTP 401, ``access-denied`` -> 403,
   ``authentication-unavailable`` -> 401, ``internal-error`` -> 500);
5. on success sends an ``x-login-data`` authorize (``certgate-account``,
   ``certgate-fingerprint``) and execs ``cockpit-bridge`` — through ``runuser -u USER --`` when
   running as root for another user. The bridge sends the real ``init``.

The protocol logic (:func:`encode_control`, :class:`FrameReader`, :class:`AuthCommand`) is
pure and unit tested; :func:`main` only wires config, key, store, clock and the exec.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from trust.cli_errors import Parser, run_command
from trust.escape import safe_text
from proxy.frontdoors.assertion import AssertionInvalid, assertion_key, verify_assertion

#: Namespace of consumed assertion ids in the store (shared with the gateway's minting side).
CONSUME_NAMESPACE = "cockpit-assertion"
#: Longest frame accepted from cockpit-ws (an Authorization header fits many times over).
MAX_FRAME = 65536
#: The Debian/upstream default list of users cockpit refuses.
DISALLOWED_USERS = "/etc/cockpit/disallowed-users"
#: Config used when neither --config nor $CERTGATE_CONFIG is given.
DEFAULT_CONFIG = "/etc/certgate/certgate.conf"


class FrameError(Exception):
    """A frame from cockpit-ws violates the framing (``doc/protocol.md``); the message says how."""


# --------------------------------------------------------------------------- framing (pure)

def encode_frame(channel: str, payload: bytes) -> bytes:
    """``<len>\\n<channel>\\n<payload>`` where len counts channel, newline and payload."""
    ch = channel.encode("utf-8")
    if b"\n" in ch:
        raise ValueError(f"channel {channel!r} contains a newline")
    body = ch + b"\n" + payload
    return str(len(body)).encode("ascii") + b"\n" + body


def encode_control(message: dict[str, Any]) -> bytes:
    """A control frame (empty channel) carrying ``message`` as JSON."""
    if "command" not in message:
        raise ValueError("a control message needs a 'command' field")
    return encode_frame("", json.dumps(message, separators=(",", ":")).encode("utf-8"))


class FrameReader:
    """Reads frames from ``read(n) -> bytes`` (b"" at end of stream).

    Guarantees: the length is a canonical positive decimal (no sign, no leading zero, at most
    ``len(str(max_frame))`` digits) and at most ``max_frame``; the whole frame is read before it
    is returned. Raises :class:`FrameError` otherwise and ``EOFError`` when the peer closed.
    """

    def __init__(self, read: Callable[[int], bytes], max_frame: int = MAX_FRAME) -> None:
        self._read = read
        self._max = max_frame
        self._buf = b""

    def _more(self) -> None:
        chunk = self._read(4096)
        if not chunk:
            raise EOFError("cockpit-ws closed the connection")
        self._buf += chunk

    def read_frame(self) -> tuple[str, bytes]:
        """The next ``(channel, payload)``."""
        max_digits = len(str(self._max))
        while b"\n" not in self._buf:
            if len(self._buf) > max_digits:
                raise FrameError(f"frame length has more than {max_digits} digits")
            self._more()
        digits, _, rest = self._buf.partition(b"\n")
        if not digits or not digits.isdigit() or not digits.isascii():
            raise FrameError(f"frame length {digits[:16]!r} is not a decimal number")
        if digits.startswith(b"0"):
            raise FrameError(f"frame length {digits[:16]!r} is not canonical (zero or leading zero)")
        if len(digits) > max_digits or int(digits) > self._max:
            raise FrameError(f"frame length {int(digits)} exceeds the limit of {self._max} bytes")
        size = int(digits)
        self._buf = rest
        while len(self._buf) < size:
            self._more()
        frame, self._buf = self._buf[:size], self._buf[size:]
        if b"\n" not in frame:
            raise FrameError("frame has no channel terminator (newline)")
        channel, _, payload = frame.partition(b"\n")
        try:
            return channel.decode("utf-8"), payload
        except UnicodeDecodeError:
            raise FrameError("frame channel is not UTF-8") from None


def parse_control(channel: str, payload: bytes) -> dict[str, Any]:
    """The JSON object of a control frame; raises FrameError for data frames or bad JSON."""
    if channel != "":
        raise FrameError(f"expected a control message, got data on channel {channel[:40]!r}")
    try:
        msg = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FrameError("control message is not UTF-8 JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("command"), str):
        raise FrameError("control message is not a JSON object with a 'command' string")
    return msg


# --------------------------------------------------------------------------- the exchange (pure)

@dataclass(frozen=True, slots=True)
class Accepted:
    """The assertion was good: start a bridge for ``user``."""

    account: str
    fingerprint: str
    user: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The login was refused with Cockpit problem code ``problem``; ``reason`` is certgate's code."""

    problem: str
    reason: str
    message: str


Consume = Callable[[str, str, float], bool]


class AuthCommand:
    """One authorize exchange with cockpit-ws.

    ``key`` is the assertion key; ``consume(namespace, jti, expires_at)`` is the store's
    single-use check; ``user_allowed(name)`` returns None when ``name`` may log in, else a
    reason; ``now()`` gives epoch seconds; ``log(text)`` goes to cockpit-ws's log (stderr).
    Nothing here execs or reads configuration.
    """

    def __init__(self, *, key: bytes | None, consume: Consume | None, user_allowed: Callable[[str], str | None],
                 now: Callable[[], float], log: Callable[[str], None], cookie: str,
                 unavailable: str | None = None) -> None:
        self._key = key
        self._consume = consume
        self._user_allowed = user_allowed
        self._now = now
        self._log = log
        self._cookie = cookie
        self._unavailable = unavailable

    def run(self, reader: FrameReader, write: Callable[[bytes], None]) -> Accepted | Refused:
        """Challenge, read the reply, decide; writes the ``init`` problem itself on refusal.

        On :class:`Accepted` it has written the ``x-login-data`` message; the caller execs the bridge.
        """
        write(encode_control({"command": "authorize", "cookie": self._cookie, "challenge": "*"}))
        try:
            channel, payload = reader.read_frame()
            msg = parse_control(channel, payload)
        except FrameError as e:
            return self._refuse(write, "internal-error", "protocol-error", f"bad frame from cockpit-ws: {e}")
        if msg.get("command") != "authorize" or msg.get("cookie") != self._cookie:
            return self._refuse(write, "internal-error", "protocol-error",
                                f"expected the authorize reply for cookie {self._cookie}, got "
                                f"command {str(msg.get('command'))[:40]!r}")
        peer = msg.get("remote-peer")
        result = self._decide(msg.get("response"), peer if isinstance(peer, str) else None)
        if isinstance(result, Refused):
            return self._refuse(write, result.problem, result.reason, result.message, peer)
        write(encode_control({"command": "authorize", "cookie": self._cookie + "-ld", "challenge": "x-login-data",
                              "login-data": {"certgate-account": result.account,
                                             "certgate-fingerprint": result.fingerprint}}))
        self._log(f"accepted account={result.account} fingerprint={result.fingerprint[:16]} "
                  f"user={result.user} remote-peer={peer}")
        return result

    def _decide(self, response: object, peer: str | None) -> Accepted | Refused:
        if self._unavailable is not None:
            return Refused("authentication-unavailable", "unavailable", self._unavailable)
        if not isinstance(response, str) or not response:
            return Refused("authentication-failed", "no-credentials", "cockpit-ws sent no credentials")
        scheme, _, token = response.partition(" ")
        if scheme.lower() != "bearer":
            return Refused("authentication-failed", "wrong-scheme",
                           f"expected a Bearer credential, got scheme {scheme[:20]!r}")
        assert self._key is not None and self._consume is not None
        try:
            claims = verify_assertion(self._key, token.strip(), now=self._now())
        except AssertionInvalid as e:
            return Refused("authentication-failed", "assertion-" + e.code, f"invalid assertion: {e}")
        try:
            first = self._consume(CONSUME_NAMESPACE, claims.jti, claims.expires_at)
        except Exception as e:  # a store outage must fail closed, with its reason logged
            return Refused("authentication-unavailable", "store-error", f"cannot record the assertion's use: {e}")
        if not first:
            return Refused("authentication-failed", "assertion-reused", "the assertion was already used")
        why = self._user_allowed(claims.account)
        if why is not None:
            return Refused("access-denied", "user-refused", why)
        return Accepted(claims.account, claims.fingerprint, claims.account)

    def _refuse(self, write: Callable[[bytes], None], problem: str, reason: str, message: str,
                peer: object = None) -> Refused:
        self._log(f"refused problem={problem} reason={reason} remote-peer={peer}: {message}")
        # the message reaches the browser (403 reason phrase): keep it generic for auth failures
        public = message if problem == "access-denied" else "certgate refused the login"
        write(encode_control({"command": "init", "problem": problem, "message": public}))
        return Refused(problem, reason, message)


# --------------------------------------------------------------------------- local users and bridge

def read_disallowed(path: str) -> frozenset[str]:
    """User names listed in cockpit's ``disallowed-users`` file (missing file: none)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def local_user_check(disallowed: frozenset[str]) -> Callable[[str], str | None]:
    """``user_allowed`` for :class:`AuthCommand`: the name must be a local user and not disallowed."""

    def check(name: str) -> str | None:
        if name in disallowed:
            return f"the account {name!r} may not use Cockpit (disallowed-users)"
        try:
            pwd.getpwnam(name)
        except KeyError:
            return f"the account {name!r} has no local user on this host"
        except ValueError:  # e.g. an embedded NUL: no user can have that name
            return f"the account {name!r} is not a valid user name"
        return None

    return check


def bridge_argv(user: str, bridge: str, *, euid: int, current_user: str) -> list[str]:
    """The command that starts the bridge as ``user``.

    As root for another user: ``runuser -u USER -- BRIDGE`` (a session switch without an auth
    stack). As ``user`` itself: ``BRIDGE``. Otherwise raises PermissionError (cannot switch).
    """
    if user == current_user:
        return [bridge]
    if euid != 0:
        raise PermissionError(f"cockpit-ws runs as {current_user!r}, not root: cannot start a bridge for {user!r}")
    runuser = shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")
    if runuser is None:
        raise PermissionError("runuser (util-linux) is not installed: cannot start a bridge for another user")
    return [runuser, "-u", user, "--", bridge]


# --------------------------------------------------------------------------- main (I/O)

def _log(text: str) -> None:
    print(f"certgate-cockpit-auth[{os.getpid()}]: {safe_text(text)}", file=sys.stderr, flush=True)


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def _setup(config_path: str) -> tuple[bytes | None, Consume | None, str | None, Any]:
    """(key, consume, unavailable-reason, store) from the certgate config; never raises."""
    try:
        from proxy.config import ConfigError, load_config
        from proxy.login.keys import KeyFileError, load_secret

        try:
            cfg = load_config(config_path)
        except ConfigError as e:
            return None, None, f"certgate config {config_path}: {e}", None
        if cfg.login.secret_key is None:
            return None, None, "[login] secret_key: is empty", None
        try:
            key = assertion_key(load_secret(cfg.login.secret_key, create=False))
        except KeyFileError as e:
            return None, None, f"[login] secret_key: {e}", None
        url = cfg.sessions.store
        if url == "memory":
            return None, None, ("[sessions] store = memory cannot mark an assertion used across processes; "
                                "use sqlite:PATH or redis://"), None
        from proxy.stores import options_from

        store = open_store(url, cfg.base_dir, options_from(cfg.sessions, cfg.base_dir))
        return key, store.consume_once, None, store
    except Exception as e:  # any setup failure must still answer cockpit-ws with a problem
        return None, None, f"setup failed: {type(e).__name__}: {e}", None


def open_store(url: str, base_dir: Path, options: Any = None) -> Any:
    """The blocking face of the configured shared store (sqlite or redis): this process owns its thread."""
    from proxy.stores import open_engine

    return open_engine(url, base_dir, options)


def main(argv: Sequence[str]) -> int:
    """``certgate cockpit-auth [--config FILE] [--bridge PATH] [HOST]``; execs the bridge on success."""
    ap = Parser(prog="certgate cockpit-auth",
                                 description="cockpit-ws auth command for Authorization: Bearer "
                                             "(cockpit.conf [bearer] Command).")
    ap.add_argument("--config", "-c", default=os.environ.get("CERTGATE_CONFIG") or DEFAULT_CONFIG,
                    help="certgate config file (secret_key, sessions store); default $CERTGATE_CONFIG, "
                         f"else {DEFAULT_CONFIG}")
    ap.add_argument("--bridge", default="cockpit-bridge", help="the bridge to exec (default: cockpit-bridge)")
    ap.add_argument("--disallowed-users", default=DISALLOWED_USERS,
                    help=f"users refused, one a line (default: {DISALLOWED_USERS})")
    ap.add_argument("host", nargs="?", default="localhost", help="appended by cockpit-ws")
    ns = ap.parse_args(list(argv))
    if ns.host != "localhost":
        _log(f"refusing host {ns.host!r}: only local logins are supported")
    key, consume, unavailable, store = _setup(ns.config)
    if ns.host != "localhost" and unavailable is None:
        unavailable = f"remote host {ns.host!r} is not supported (set LoginTo = false)"
    cmd = AuthCommand(key=key, consume=consume, user_allowed=local_user_check(read_disallowed(ns.disallowed_users)),
                      now=time.time, log=_log, cookie=f"certgate{os.getpid()}", unavailable=unavailable)
    try:
        result = cmd.run(FrameReader(lambda n: os.read(0, n)), _write_all)
    except (EOFError, OSError) as e:
        _log(f"cockpit-ws went away: {e}")
        return 1
    finally:
        if store is not None:
            store.close()
    if isinstance(result, Refused):
        return 0
    current = pwd.getpwuid(os.geteuid()).pw_name
    try:
        argv_ = bridge_argv(result.user, ns.bridge, euid=os.geteuid(), current_user=current)
    except PermissionError as e:
        _log(f"refused: {e}")
        _write_all(encode_control({"command": "init", "problem": "access-denied",
                                   "message": "certgate cannot start a session for this account"}))
        return 0
    _log("exec " + " ".join(argv_))
    os.execvp(argv_[0], argv_)
    return 127  # pragma: no cover - execvp does not return


def console_main() -> int:
    """The ``certgate-cockpit-auth`` console script (cockpit 287 cannot pass ``cockpit-auth``); a
    usage error is one line and status 2, as under ``certgate cockpit-auth``."""
    return run_command("certgate-cockpit-auth", main, sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
