"""proxy.app.reactor: direct event dispatch keeps Twisted's failure handling."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_direct_reactor_dispatches_and_survives_a_failing_handler() -> None:
    """A handler that raises is logged; the loop goes on and serves the next event."""
    code = textwrap.dedent("""
        import socket, sys
        from proxy.app.reactor import DirectEPollReactor, install
        reactor = install()
        assert isinstance(reactor, DirectEPollReactor)
        from twisted.internet import protocol
        from twisted.python import log
        errors = []
        log.addObserver(lambda e: e.get("isError") and errors.append(e))
        got = []
        class P(protocol.Protocol):
            def dataReceived(self, data):
                got.append(data)
                if data == b"boom":
                    raise RuntimeError("handler failed")
                self.transport.write(b"ok:" + data)
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(P), interface="127.0.0.1")
        def client():
            s = socket.create_connection(("127.0.0.1", port.getHost().port))
            s.sendall(b"boom")
            s2 = socket.create_connection(("127.0.0.1", port.getHost().port))
            s2.sendall(b"hi")
            s2.settimeout(5)
            reply = s2.recv(10)
            print(reply.decode(), len(errors) >= 1, got[0] == b"boom")
            reactor.stop()
        reactor.callInThread(client)
        reactor.run()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["ok:hi", "True", "True"], out.stdout + out.stderr
