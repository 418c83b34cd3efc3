"""The one test harness: what unit, black-box and browser tests build their worlds from.

Parts (import from the module; nothing is re-exported here, so a unit test does not load
what a browser test needs):

- :mod:`~tests.harness.pki` — the test PKI on :mod:`trust.issue`: CA, trust store, server and
  client certificates (also broken ones).
- :mod:`~tests.harness.config` — config builders: ``certgate.conf`` for a real gateway, a
  parsed Config for the listener, an in-memory Config for the HTTP engine.
- :mod:`~tests.harness.upstream` — the recording upstream (HTTP/1.1 and WebSocket, threads).
- :mod:`~tests.harness.gateway` — launchers: ``certgate run``, the HTTP layer behind a fake
  gate (:mod:`~tests.harness.fakegate`), ``certgate demo-upstream``, the console script.
- :mod:`~tests.harness.client` — test clients: one HTTPS request, raw bytes, TLS handshakes,
  WebSocket; :mod:`~tests.harness.wire` — HTTP/1.1 and WebSocket framing for them.
- :mod:`~tests.harness.memtls` — in-memory TLS handshakes against the listener (unit tests).
- :mod:`~tests.harness.wait`, :mod:`~tests.harness.process` — polling with deadlines, free
  ports, child processes that are stopped for sure.
- :mod:`~tests.harness.sessions` — password login through a real gateway, the session cookie.
- :mod:`~tests.harness.reactor_thread` — the global reactor on a thread (real I/O in unit tests).
- Real programs and emulators: :mod:`~tests.harness.cockpit_ws` (cockpit-ws) and
  :mod:`~tests.harness.cockpit` (its config and client), :mod:`~tests.harness.redis_server`,
  :mod:`~tests.harness.slapd`, :mod:`~tests.harness.ocsp` (``openssl ocsp``, replayed answers),
  :mod:`~tests.harness.joc` (a JOC Cockpit emulator), :mod:`~tests.harness.relay` (a TCP relay
  recording what reaches a real upstream).
- The browser suite: :mod:`~tests.harness.chromium`, :mod:`~tests.harness.smartcard`,
  :mod:`~tests.harness.accounts`.
"""
