"""The presence page script, executed by a real JavaScript engine (node) against a small fake DOM."""

from __future__ import annotations

import json
import shutil
import subprocess

from proxy.sessions.presence import presence_script

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


HARNESS_FRESHNESS = r"""
const out = {fetches: [], events: [], assigned: [], notices: [], timers: []};
let answers = [];
let now = 1000000;
Date.now = () => now;
global.CustomEvent = class { constructor(t) { this.type = t; } };
global.fetch = (url) => {
  out.fetches.push(url);
  const a = answers.shift();
  if (a === "down") { return Promise.reject(new TypeError("Failed to fetch")); }
  return Promise.resolve({status: a.status, json: () => Promise.resolve(a.body)});
};
global.setInterval = (f, ms) => { out.interval = ms; out.tick = f; };
global.setTimeout = (f, ms) => { out.timers.push(ms); out.endTimer = f; return 1; };
global.clearTimeout = () => {};
const win = {dispatchEvent: (e) => out.events.push(e.type)};
win.top = win;
win.location = {pathname: "/system", search: "", assign: (u) => out.assigned.push(u)};
global.window = win;
function el(tag) {
  const e = {tag, children: [], style: {}, attrs: {}, textContent: "", href: ""};
  e.setAttribute = (k, v) => { e.attrs[k] = v; };
  e.appendChild = (c) => e.children.push(c);
  return e;
}
global.document = {
  visibilityState: "visible", currentScript: null, addEventListener: () => {},
  createElement: el, body: {appendChild: (d) => out.notices.push(
    {id: d.id, role: d.attrs.role, text: d.children[0].textContent, link: d.children[1].href})},
};
const settle = () => new Promise((r) => setImmediate(r));
(async () => {
  // 1: answered on an old connection -> asked again at once, once
  answers = [{status: 200, body: {fresh: false, ends_at: 1300, now: 1000}},
             {status: 200, body: {fresh: true, ends_at: 1300, now: 1000}}];
  eval(SCRIPT);
  for (let i = 0; i < 6; i++) { await settle(); }
  out.afterStale = out.fetches.length;
  // 2: the card is out (need mode): pings fail; before the end nothing is shown
  answers = ["down"];
  out.tick();
  for (let i = 0; i < 6; i++) { await settle(); }
  out.noticesBeforeEnd = out.notices.length;
  // 3: past the announced end, still unreachable: the page says the certificate is needed
  now += 301000;
  answers = ["down"];
  out.endTimer();
  for (let i = 0; i < 6; i++) { await settle(); }
  answers = ["down"];
  out.tick();
  for (let i = 0; i < 6; i++) { await settle(); }
  delete out.tick; delete out.endTimer;
  console.log(JSON.stringify(out));
})();
"""


def test_presence_script_retries_stale_answers_and_says_when_the_certificate_is_needed():
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node (Debian package nodejs) is needed to execute the presence script"
    prog = "const SCRIPT = " + json.dumps(presence_script(2.5).decode()) + ";\n" + HARNESS_FRESHNESS
    r = subprocess.run([node, "-e", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["interval"] == 2500  # fractional intervals (short graces) are kept
    assert out["afterStale"] == 2  # one immediate retry after "fresh": false, not more
    assert out["timers"] and out["timers"][0] == 300 * 1000 + 500  # a ping at the session's announced end
    assert out["noticesBeforeEnd"] == 0
    assert out["events"] == ["certgate-session-ended"]  # once
    assert len(out["notices"]) == 1 and out["assigned"] == []  # unreachable: no navigation, a notice
    n = out["notices"][0]
    assert n["id"] == "certgate-session-ended" and n["role"] == "alert"
    assert "certificate (smart card) is needed again" in n["text"]
    assert n["link"] == "/.certgate/login?next=%2Fsystem"
    assert len(out["fetches"]) == 4  # stopped after the end: the last tick sent nothing


AWAIT_HARNESS = r"""
const out = {assigned: [], events: [], fetches: 0};
let nextStatus = 401;
const win = {dispatchEvent: (e) => out.events.push(e.type)};
win.top = win;
win.location = {pathname: "/joc/", search: "", assign: (u) => out.assigned.push(u)};
global.window = win;
global.CustomEvent = class { constructor(t) { this.type = t; } };
global.fetch = () => { out.fetches++; return Promise.resolve({status: nextStatus}); };
global.setInterval = (f) => { out.tick = f; };
global.setTimeout = () => 0;
global.clearTimeout = () => {};
global.document = {visibilityState: "visible", addEventListener: () => {},
  currentScript: {getAttribute: (n) => ({"data-interval": "2", "data-await-session": "on"})[n] ?? null}};
const step = () => new Promise((r) => setImmediate(r));
(async () => {
  eval(SCRIPT);
  await step();
  out.tick(); await step();            // JOC's login page, nobody logged in yet: 401, ignored
  const before = {assigned: out.assigned.length, events: out.events.length};
  nextStatus = 200; out.tick(); await step();   // JOC's login opened the session
  nextStatus = 401; out.tick(); await step();   // now a 401 means the session is over
  out.before = before;
  delete out.tick;
  console.log(JSON.stringify(out));
})();
"""


def test_presence_script_on_a_login_page_waits_for_the_session():
    """data-await-session="on" (JOC's login page served before any session): 401s are ignored
    until the session has been seen once; after that a 401 ends the page as usual."""
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node (Debian package nodejs) is needed to execute the presence script"
    prog = "const SCRIPT = " + json.dumps(presence_script(2).decode()) + ";\n" + AWAIT_HARNESS
    r = subprocess.run([node, "-e", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["before"] == {"assigned": 0, "events": 0} and out["fetches"] == 4
    assert out["events"] == ["certgate-session-ended"] and out["assigned"] == ["/joc/"]  # JOC's page: its login


HARNESS_LOGOUT = r"""
const out = {fetches: [], events: [], assigned: [], notices: 0};
let answers = [];
global.CustomEvent = class { constructor(t) { this.type = t; } };
global.fetch = (url) => {
  out.fetches.push(url);
  const a = answers.shift();
  return Promise.resolve({status: a.status, json: () => Promise.resolve(a.body)});
};
global.setInterval = (f, ms) => { out.tick = f; };
global.setTimeout = () => 1;
global.clearTimeout = () => {};
const win = {dispatchEvent: (e) => out.events.push(e.type)};
win.top = win;
win.location = {pathname: "/system", search: "", assign: (u) => out.assigned.push(u)};
global.window = win;
global.document = {visibilityState: "visible", currentScript: null, addEventListener: () => {},
                   createElement: () => ({}), body: {appendChild: () => { out.notices++; }}};
const settle = async () => { for (let i = 0; i < 6; i++) { await new Promise((r) => setImmediate(r)); } };
(async () => {
  answers = [{status: 401, body: {error: "session-ended", ended: ENDED}}];
  eval(SCRIPT);
  await settle();
  answers = [{status: 200, body: {}}];
  out.tick();                           // stopped either way: no more pings
  await settle();
  delete out.tick;
  console.log(JSON.stringify(out));
})();
"""


def _run_logout(ended: str) -> dict:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node (Debian package nodejs) is needed to execute the presence script"
    prog = ("const SCRIPT = " + json.dumps(presence_script(2).decode()) + ";\nconst ENDED = " + json.dumps(ended)
            + ";\n" + HARNESS_LOGOUT)
    r = subprocess.run([node, "-e", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_presence_script_leaves_a_logged_out_page_to_the_app():
    """After Cockpit's Logout (or certgate's) the app's own reload decides the next page: the
    script neither navigates to certgate's login (a second login) nor covers the page."""
    for ended in ("cockpit-logout", "logout"):
        out = _run_logout(ended)
        assert out["assigned"] == [] and out["notices"] == 0 and out["events"] == [], ended
        assert len(out["fetches"]) == 1, ended


def test_presence_script_still_sends_an_expired_session_to_the_login():
    out = _run_logout("grace-expired")
    assert out["assigned"] == ["/.certgate/login?next=%2Fsystem"] and out["events"] == ["certgate-session-ended"]
    assert len(out["fetches"]) == 1
