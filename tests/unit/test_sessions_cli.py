"""`certgate sessions list|revoke` against a real SQLite store file named by a real config."""

from __future__ import annotations

import json
import time

import pytest

from proxy.app import cli as certgate
from proxy.stores.interface import SessionRecord
from proxy.stores.sqlite import SQLiteEngine as SQLiteStore  # the CLI's blocking face
from tests.sessions_support import Pki, write_config


def main(argv):
    """``certgate sessions ARGV`` through the dispatcher, which prints a refusal as one line (status 2)."""
    return certgate.main(["sessions", *argv])


@pytest.fixture
def setup(tmp_path):
    pki = Pki(tmp_path / "pki")
    audit = tmp_path / "audit.jsonl"
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9",
                       extra={"sessions": {"store": "sqlite:state/sessions.db"}, "audit": {"file": str(audit)}})
    store = SQLiteStore(tmp_path / "state" / "sessions.db")
    now = time.time()

    def add(i, account, fp, **kw):
        base = dict(id=f"{i:x}" * 64, account=account, fingerprint=fp, cert_der=b"der", chain_der=(),
                    created_at=now - 100, proved_at=now - 10, last_seen=now - 5, client_ip="192.0.2.%d" % i)
        base.update(kw)
        rec = SessionRecord(**base)
        store.create(rec)
        return rec

    recs = [add(1, "alice", "aa" * 32), add(2, "alice", "bb" * 32, long_until=now + 3000),
            add(3, "bob", "bb" * 32), add(4, "carol", "cc" * 32, proved_at=now - 1000)]  # 4: grace over
    yield cfg, store, recs, audit
    store.close()


def test_list_shows_live_sessions_with_their_times(setup, capsys):
    cfg, store, recs, _ = setup
    assert main(["list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "ACCOUNT", "FINGERPRINT", "CREATED", "PROVED_AT", "ENDS_AT", "TRUSTED",
                              "CLIENT_IP", "STATE"]
    assert len(out) == 4  # carol's grace ran out: not live
    assert any(line.startswith("111111111111  alice") and "no" in line.split() for line in out)
    assert any(line.startswith("222222222222  alice") and "yes" in line.split() for line in out)
    assert main(["list", "--config", str(cfg), "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    states = {r["account"] + r["id"][:1]: r["state"] for r in rows}
    assert states == {"alice1": "live", "alice2": "live", "bob3": "live", "carol4": "expired"}
    carol = [r for r in rows if r["account"] == "carol"][0]
    assert carol["end_reason"] == "grace-expired" and carol["fingerprint"] == "cc" * 32


def test_revoke_by_id_prefix_account_and_fingerprint(setup, capsys):
    cfg, store, recs, audit = setup
    assert main(["revoke", "--config", str(cfg), "11111111"]) == 0
    assert store.get(recs[0].id).ended == "admin-revoke"
    assert main(["revoke", "--config", str(cfg), "--fingerprint", "BB" * 32]) == 0
    assert "revoked 2 session(s)" in capsys.readouterr().out
    assert store.get(recs[1].id).ended == store.get(recs[2].id).ended == "admin-revoke"
    assert main(["revoke", "--config", str(cfg), "--account", "alice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("certgate sessions revoke: ") and "no live session matches account 'alice'" in err
    assert err.count("\n") == 1
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["reason"] for x in lines] == ["admin-revoke"] * 3 and all(x["source"] == "cli" for x in lines)


def test_revoke_errors_are_precise(setup, capsys):
    cfg, store, recs, _ = setup
    assert main(["revoke", "--config", str(cfg), "1234"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["revoke", "--config", str(cfg)]) == 2
    assert "revoke takes a session ID" in capsys.readouterr().err
    assert main(["revoke", "--config", str(cfg), "11111111", "--account", "alice"]) == 2
    assert main(["revoke", "--config", str(cfg), "99999999"]) == 2
    assert "no live session matches id '99999999'" in capsys.readouterr().err
    assert main(["list", "--config", str(cfg.parent / "missing.conf")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_memory_store_needs_the_admin_api(tmp_path, capsys):
    pki = Pki(tmp_path / "pki")
    cfg = write_config(tmp_path, pki, upstream="http://127.0.0.1:9", extra={"sessions": {"store": "memory"}})
    assert main(["list", "--config", str(cfg)]) == 2
    assert "enable the admin API" in capsys.readouterr().err
