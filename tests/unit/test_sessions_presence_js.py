"""The presence page script, executed by a real JavaScript engine (node) against a small fake DOM."""

from __future__ import annotations

import json
import shutil
import subprocess

from proxy.presence import presence_script

HARNESS = r"""
const out = {fetches: [], intervals: [], assigned: [], events: [], listeners: []};
let nextStatus = 200;
function makeWindow(top) {
  const w = {dispatchEvent: (e) => out.events.push(e.type)};
  w.top = top || w;
  w.location = {pathname: "/cockpit/system", search: "?x=1", assign: (u) => out.assigned.push(u)};
  return w;
}
global.CustomEvent = class { constructor(t) { this.type = t; } };
global.fetch = (url, opts) => { out.fetches.push([url, opts]); return Promise.resolve({status: nextStatus}); };
global.setInterval = (f, ms) => { out.intervals.push(ms); out.tick = f; };
function load(win, attrs, visibility) {
  global.window = win;
  global.document = {
    visibilityState: visibility,
    currentScript: {getAttribute: (n) => (n in attrs ? attrs[n] : null)},
    addEventListener: (t, f) => { out.listeners.push(t); out.onvis = f; },
  };
  eval(SCRIPT);
}
(async () => {
  const top = makeWindow(null);
  load(top, {"data-interval": "7"}, "visible");
  const frame = makeWindow(top);
  load(frame, {}, "visible");           // an iframe of the same page: no second pinger
  await new Promise((r) => setImmediate(r));
  document.visibilityState = "hidden";
  out.tick();                           // a ping from a hidden page
  await new Promise((r) => setImmediate(r));
  nextStatus = 401;
  out.tick();                           // the session is over
  await new Promise((r) => setImmediate(r));
  out.tick();                           // stopped: no more pings
  await new Promise((r) => setImmediate(r));
  delete out.tick; delete out.onvis;
  console.log(JSON.stringify(out));
})();
"""


def run_node(script: bytes) -> dict:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node (Debian package nodejs) is needed to execute the presence script"
    prog = "const SCRIPT = " + json.dumps(script.decode()) + ";\n" + HARNESS
    r = subprocess.run([node, "-e", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_presence_script_pings_from_the_top_window_and_leaves_on_401():
    out = run_node(presence_script(30))
    urls = [f[0] for f in out["fetches"]]
    assert urls == ["/.certgate/presence?visible=1", "/.certgate/presence?visible=0",
                    "/.certgate/presence?visible=0"]
    opts = out["fetches"][0][1]
    assert opts["credentials"] == "same-origin" and opts["cache"] == "no-store"
    assert out["intervals"] == [7000]  # data-interval wins over the default; one pinger only
    assert out["listeners"] == ["visibilitychange"]
    assert out["events"] == ["certgate-session-ended"]
    assert out["assigned"] == ["/.certgate/login?next=%2Fcockpit%2Fsystem%3Fx%3D1"]
