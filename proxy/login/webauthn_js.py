"""The one script of certgate's pages: runs a WebAuthn ceremony and submits its result.

It reads the options from ``<script type="application/json" id="webauthn-options"
data-mode="get|create">`` (a data block, never executed), calls
``navigator.credentials.get``/``create`` when ``#webauthn-go`` is clicked, writes the
credential's JSON (base64url fields, the W3C ``toJSON`` shape py_webauthn parses) into the
form's ``webauthn`` field and submits the form. Pages allow exactly this script by its hash
(:data:`SCRIPT_SRC`); nothing else runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

SCRIPT = r"""(function(){"use strict";
var data=document.getElementById("webauthn-options"),btn=document.getElementById("webauthn-go");
if(!data||!btn)return;
var opts=JSON.parse(data.textContent),mode=data.getAttribute("data-mode");
function buf(s){s=s.replace(/-/g,"+").replace(/_/g,"/");while(s.length%4)s+="=";var b=atob(s),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);return u.buffer;}
function b64(a){var u=new Uint8Array(a),s="";for(var i=0;i<u.length;i++)s+=String.fromCharCode(u[i]);return btoa(s).replace(/\+/g,"-").replace(/\//g,"_").replace(/=+$/,"");}
function ids(l){return(l||[]).map(function(c){return Object.assign({},c,{id:buf(c.id)});});}
function say(t){var m=document.getElementById("webauthn-status");if(m)m.textContent=t;}
btn.addEventListener("click",function(ev){
ev.preventDefault();var form=btn.form;if(!form.reportValidity())return;
var pk=Object.assign({},opts,{challenge:buf(opts.challenge)}),p;
if(mode==="create"){pk.user=Object.assign({},opts.user,{id:buf(opts.user.id)});pk.excludeCredentials=ids(opts.excludeCredentials);p=navigator.credentials.create({publicKey:pk});}
else{pk.allowCredentials=ids(opts.allowCredentials);p=navigator.credentials.get({publicKey:pk});}
say("Touch your security key or confirm on your device.");btn.disabled=true;
p.then(function(c){var r=c.response,o={id:c.id,rawId:b64(c.rawId),type:c.type,clientExtensionResults:c.getClientExtensionResults(),response:{clientDataJSON:b64(r.clientDataJSON)}};
if(c.authenticatorAttachment)o.authenticatorAttachment=c.authenticatorAttachment;
if(mode==="create"){o.response.attestationObject=b64(r.attestationObject);if(r.getTransports)o.response.transports=r.getTransports();}
else{o.response.authenticatorData=b64(r.authenticatorData);o.response.signature=b64(r.signature);if(r.userHandle)o.response.userHandle=b64(r.userHandle);}
form.elements.webauthn.value=JSON.stringify(o);form.submit();},
function(e){btn.disabled=false;say("The security key did not answer ("+e.name+"). Try again.");});});
})();"""

#: the CSP source allowing :data:`SCRIPT` (and nothing else)
SCRIPT_SRC = "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii") + "'"


def options_block(options: dict[str, Any], mode: str) -> str:
    """The data block carrying ``options`` (``<`` escaped so it cannot close the element) and the script."""
    text = json.dumps(options, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    return (f'<script type="application/json" id="webauthn-options" data-mode="{mode}">{text}</script>'
            f"<script>{SCRIPT}</script>")
