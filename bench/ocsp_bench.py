"""The added handshake cost of an OCSP check, cached and cold (part of `make bench`).

Runs the code a handshake runs - ``HandshakeVerifier.decide`` (the verify callback's work)
and, for a cold check, the wait for the answer and ``trust.ocsp.apply`` (what ``identify``
does) - against a real local ``openssl ocsp`` responder:

* ``baseline``: ``decide`` with OCSP off, verdict cached (what every handshake pays today);
* ``cached``: ``decide`` with OCSP on and the answer cached;
* ``cold``: ``decide`` with an empty cache, the POST to the responder through
  ``twisted.web.client.Agent`` on the real reactor, validation, ``apply`` - one certificate
  after another (each check waits for the previous one).

It reports the certgate process's CPU time per check (``time.process_time``; the responder's
own CPU is excluded) and, for cold checks, the wall-clock latency a handshake waits (the
responder's signing included). On a shared machine both drift; repetitions are interleaved and
medians with [min-max] are printed. Usage::

    .venv/bin/python bench/ocsp_bench.py [--cached N] [--cold N] [--e2e N] [--reps R] [--json FILE]

``--e2e N`` (default 200; 0 skips) adds real gateways (``ocsp_e2e.py``): OCSP off and
``hard``, N TLS 1.3 mTLS connections per phase, the gateway process's CPU per connection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy.listener.verify import HandshakeRecord, HandshakeVerifier  # noqa: E402
from proxy.listener.ocsp import AgentFetcher, OcspChecker  # noqa: E402
from trust import issue as I  # noqa: E402
from trust import ocsp as O  # noqa: E402
from trust.mapping import map_presented  # noqa: E402
from trust.presented import PresentedCertificate  # noqa: E402
from trust.settings import MappingSettings  # noqa: E402
from trust.store import load_store  # noqa: E402
from trust.verify import VerdictCache, VerifyPolicy  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _responder(folder: Path, ca: I.Issued, leaves: list[I.Issued], port: int) -> subprocess.Popen[bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed (Debian package: openssl)")
    lines = []
    for leaf in leaves:
        serial = f"{leaf.cert.serial_number:X}"
        serial = "0" * (len(serial) % 2) + serial
        lines.append(f"V\t{leaf.cert.not_valid_after_utc:%y%m%d%H%M%SZ}\t\t{serial}\tunknown\t/CN={leaf.cert.subject.rfc4514_string()[3:]}\n")
    (folder / "index.txt").write_text("".join(lines))
    ca_pem, ca_key = ca.write(folder, "ca")
    log = open(folder / "responder.log", "wb")
    proc = subprocess.Popen([openssl, "ocsp", "-index", str(folder / "index.txt"), "-CA", str(ca_pem), "-rsigner",
                             str(ca_pem), "-rkey", str(ca_key), "-port", str(port), "-nmin", "60", "-ignore_err"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while not re.search(rf"ACCEPT \S*:{port}\b", (folder / "responder.log").read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"openssl ocsp did not start: {(folder / 'responder.log').read_text()}")
        time.sleep(0.05)
    return proc


def _verifier(generation: Any, checker: OcspChecker | None) -> HandshakeVerifier:
    from twisted.internet import reactor

    mapping = MappingSettings()
    return HandshakeVerifier(generation=generation, policy=VerifyPolicy(), verdicts=VerdictCache(),
                             mapper=lambda c: map_presented(c, mapping), client_auth="need", clock=reactor,
                             ocsp=checker)


def _per_call_us(verifier: HandshakeVerifier, leaf_der: bytes, n: int) -> float:
    rec = HandshakeRecord(verifier)
    decide = verifier.decide
    cert = PresentedCertificate.received(leaf_der)
    decide(rec, cert, time.time())  # warm the verdict (and OCSP) caches
    now = time.time()
    t0 = time.process_time()
    for _ in range(n):
        decide(rec, cert, now)
    return (time.process_time() - t0) / n * 1e6


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cached", type=int, default=20000, help="decide() calls per cached repetition")
    ap.add_argument("--cold", type=int, default=150, help="distinct certificates per cold repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--e2e", type=int, default=200, help="connections per phase through real gateways (0: skip)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred

    folder = Path(tempfile.mkdtemp(prefix="certgate-ocsp-bench."))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    ca = I.ca("bench OCSP CA")
    (folder / "store").mkdir()
    (folder / "store" / "ca.pem").write_bytes(ca.cert_pem())
    generation = load_store(folder / "store", now=I.utcnow())
    cached_leaf = I.client(ca, "alice", ocsp_urls=(url,))
    cold = [[I.client(ca, f"u{r}x{i}", ocsp_urls=(url,)) for i in range(args.cold)] for r in range(args.reps)]
    e2e_cold = [[I.client(ca, f"e{r}x{i}", ocsp_urls=(url,)) for i in range(args.e2e)] for r in range(args.reps)]
    proc = _responder(folder, ca, [cached_leaf] + [c for rep in cold + e2e_cold for c in rep], port)
    from cryptography.hazmat.primitives.serialization import Encoding

    settings = O.OcspSettings(mode="hard", timeout=5.0)
    checker = OcspChecker(settings, reactor, AgentFetcher(reactor))
    base_v, ocsp_v = _verifier(generation, None), _verifier(generation, checker)
    cached_der = cached_leaf.cert.public_bytes(Encoding.DER)
    results: dict[str, list[float]] = {"baseline_us": [], "cached_us": [], "new_cert_us": [], "cold_cpu_us": [],
                                       "cold_wall_ms": [], "cold_p95_ms": []}
    failures: list[str] = []

    async def run() -> None:
        # The cached leaf's answer, once.
        rec = HandshakeRecord(ocsp_v)
        ocsp_v.decide(rec, PresentedCertificate.received(cached_der), time.time())
        if rec.ocsp_wait is not None:
            await rec.ocsp_wait
        for r in range(args.reps):
            results["baseline_us"].append(_per_call_us(base_v, cached_der, args.cached))
            results["cached_us"].append(_per_call_us(ocsp_v, cached_der, args.cached))
            ders = [leaf.cert.public_bytes(Encoding.DER) for leaf in cold[r]]
            cpu0 = time.process_time()
            for der in ders:  # a certificate never seen: full chain verification, OCSP off
                base_v.decide(HandshakeRecord(base_v), PresentedCertificate.received(der), time.time())
            results["new_cert_us"].append((time.process_time() - cpu0) / len(ders) * 1e6)
            walls: list[float] = []
            cpu0 = time.process_time()
            for leaf in cold[r]:
                der = leaf.cert.public_bytes(Encoding.DER)
                w0 = time.perf_counter()
                rec = HandshakeRecord(ocsp_v)
                ocsp_v.decide(rec, PresentedCertificate.received(der), time.time())
                assert rec.ocsp_wait is not None and rec.ocsp_plan is not None, "a cold check must fetch"
                assert rec.verdict is not None
                result = await rec.ocsp_wait
                v = O.apply(rec.verdict, *O.decide(rec.ocsp_plan.mode, result))
                walls.append((time.perf_counter() - w0) * 1e3)
                if not v.ok:
                    failures.append(v.summary)
            results["cold_cpu_us"].append((time.process_time() - cpu0) / len(cold[r]) * 1e6)
            results["cold_wall_ms"].append(statistics.median(walls))
            results["cold_p95_ms"].append(sorted(walls)[int(len(walls) * 0.95) - 1])

    outcome: list[Any] = []

    def start() -> None:
        done: Deferred[None] = ensureDeferred(run())
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    try:
        if args.e2e and not (outcome and hasattr(outcome[0], "raiseException")):
            from ocsp_e2e import measure

            results.update(measure(folder / "e2e", folder / "store", cached_leaf, e2e_cold, args.e2e))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    if outcome and hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    base, cached = results["baseline_us"], results["cached_us"]
    added = [c - b for b, c in zip(base, cached)]
    print("OCSP handshake cost (certgate CPU per check; median [min-max] of "
          f"{args.reps} interleaved repetitions; shared machine: noisy)")
    print(f"  verify callback, OCSP off (verdict cached)   {_spread(base)} us")
    print(f"  verify callback, OCSP on, answer cached      {_spread(cached)} us   (added: {_spread(added)} us)")
    new, cold_cpu = results["new_cert_us"], results["cold_cpu_us"]
    print(f"  new certificate, OCSP off (chain verified)   {_spread(new)} us")
    print(f"  new certificate, OCSP on, cold check         {_spread(cold_cpu)} us   (added: "
          f"{_spread([c - b for b, c in zip(new, cold_cpu)])} us: request, POST, validation)")
    print(f"  cold check, wall time a handshake waits      {_spread(results['cold_wall_ms'])} ms median, "
          f"{_spread(results['cold_p95_ms'])} ms p95 (local openssl ocsp responder)")
    if args.e2e:
        ko, kc, no, nc = (results[k] for k in ("e2e_known_off_us", "e2e_known_cached_us", "e2e_new_off_us",
                                                "e2e_new_cold_us"))
        print(f"Real gateways, TLS 1.3 mTLS handshake + GET per connection (gateway CPU per connection, "
              f"{args.e2e} connections per phase)")
        print(f"  known certificate, OCSP off                  {_spread(ko)} us")
        print(f"  known certificate, OCSP hard, cached         {_spread(kc)} us   (added: "
              f"{_spread([c - b for b, c in zip(ko, kc)])} us)")
        print(f"  new certificate, OCSP off                    {_spread(no)} us")
        print(f"  new certificate, OCSP hard, cold             {_spread(nc)} us   (added: "
              f"{_spread([c - b for b, c in zip(no, nc)])} us)")
        if sum(results["e2e_failures"]):
            failures.append(f"{sum(results['e2e_failures']):g} gateway connections did not get a 200")
    if failures:
        print(f"  {len(failures)} cold checks did not come back good, e.g. {failures[0]}")
    if args.json:
        args.json.write_text(json.dumps({"reps": args.reps, "cached_calls": args.cached, "cold_checks": args.cold,
                                         **results, "failures": len(failures)}, indent=2))
    if not failures:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"  kept {folder} (responder.log)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
