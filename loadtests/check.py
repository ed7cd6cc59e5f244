"""After a load run: count in Redis what the run started and compare it with the ledger.

* every accepted fire started exactly one workflow (one fire key per accepted id, naming the
  workflow the answer named, whose origin names the trigger and the id);
* no duplicate delivery started a second one (the trigger's run count and the workflows created in
  the run's time window with that origin equal the accepted ids, and every replay was answered
  with the first workflow's id);
* no rejected delivery started any (no fire key for any badly signed delivery id);
* every workflow submitted directly finished ``completed``.

    python -m loadtests.check [webhooks mixed submit]     exit status 1 when a count is off
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis

from flowcore.keyspace import Keyspace
from flowcore.signatures import SignaturePreset, WebhookAuth, replay_key
from loadtests.common import REPORTS, delivery_body

# The webhook load test signs with the GitHub preset: its replay key is the body's digest.
WEBHOOK_AUTH = WebhookAuth(SignaturePreset.GITHUB, "unused: only the preset matters here")

REPO = Path(__file__).resolve().parent.parent


def redis_url() -> str:
    if os.environ.get("FLOW_REDIS__URL"):
        return os.environ["FLOW_REDIS__URL"]
    env_file = REPO / ".flow" / "stack.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("FLOW_REDIS__URL="):
                return line.split("=", 1)[1]
    return "redis://127.0.0.1:6390/0"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _body_key(delivery_id: str) -> str:
    return replay_key(WEBHOOK_AUTH, delivery_body(delivery_id), delivery_id).removeprefix("body:")


class Checker:
    def __init__(self, conn: redis.Redis, keys: Keyspace) -> None:
        self.r = conn
        self.keys = keys
        self.problems: list[str] = []

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def fire_keys(self, fire_owner: str, kind: str) -> dict[str, str]:
        """``{id: workflow id}`` of every fire key of one trigger (or template) and kind."""
        prefix = self.keys.fire(fire_owner, f"{kind}:")
        out: dict[str, str] = {}
        for key in self.r.scan_iter(match=prefix + "*", count=1000):
            value = self.r.get(key)
            out[_s(key)[len(prefix) :]] = _s(value) if value is not None else ""
        return out

    def origins_in_window(self, start: float, stop: float) -> list[dict[str, Any]]:
        ids = [_s(i) for i in self.r.zrangebyscore(self.keys.all_workflows, int(start * 1000) - 1000, int(stop * 1000) + 5000)]
        pipe = self.r.pipeline(transaction=False)
        for wf_id in ids:
            pipe.hget(self.keys.workflow(wf_id), "origin")
        return [json.loads(_s(o)) if o else {} for o in pipe.execute()]

    def fires(self, ledger: dict[str, Any], owner: str, kind: str, origin_kind: str, *, trigger_id: str | None) -> None:
        accepted = {k.removeprefix(f"{kind}:"): v for k, v in ledger["accepted"].items() if k.startswith(f"{kind}:")}
        key_kind = kind
        if kind == "delivery":
            # A webhook's fire key is its body's digest (a replay under a new delivery id starts nothing).
            accepted = {_body_key(d): wf for d, wf in ledger["accepted"].items()}
            key_kind = "body"
        keys = {k: v for k, v in self.fire_keys(owner, key_kind).items() if not v.startswith("skip:")}
        self.expect(len(keys) == len(accepted), f"{kind}: {len(accepted)} accepted but {len(keys)} fire keys")
        wrong = [k for k, v in accepted.items() if keys.get(k) != v]
        self.expect(not wrong, f"{kind}: {len(wrong)} accepted ids name another workflow in Redis, e.g. {wrong[:3]}")
        wf_ids = set(accepted.values())
        self.expect(len(wf_ids) == len(accepted), f"{kind}: two accepted ids share a workflow")
        origins = self.origins_in_window(ledger["started_at"], ledger["stopped_at"])
        started = [o for o in origins if o.get("kind") == origin_kind
                   and (o.get("trigger_id") == trigger_id if trigger_id else o.get("template_id") == owner.removeprefix("wf:"))]
        self.expect(len(started) == len(accepted),
                    f"{kind}: {len(started)} workflows with this origin were created in the run, {len(accepted)} accepted")
        self.expect(not ledger["duplicate_mismatches"], f"{kind}: replays answered wrongly: {ledger['duplicate_mismatches'][:3]}")

    def webhooks(self, ledger: dict[str, Any]) -> dict[str, Any]:
        tid = ledger["setup"]["trigger_id"]
        self.fires(ledger, tid, "delivery", "webhook", trigger_id=tid)
        run_count = int(self.r.hget(self.keys.trigger(tid), "run_count") or 0)
        self.expect(run_count == len(ledger["accepted"]), f"webhooks: run_count {run_count} != {len(ledger['accepted'])} accepted")
        leaked = [d for d in ledger["rejected"] if self.r.exists(self.keys.fire(tid, f"body:{_body_key(d)}"))]
        self.expect(not leaked, f"webhooks: {len(leaked)} badly signed deliveries started something: {leaked[:3]}")
        return {"accepted": len(ledger["accepted"]), "duplicates": ledger["duplicates"], "rejected": len(ledger["rejected"]),
                "run_count": run_count}

    def mixed(self, ledger: dict[str, Any]) -> dict[str, Any]:
        tid, template = ledger["setup"]["trigger_id"], ledger["setup"]["template_id"]
        events = {k: v for k, v in ledger["accepted"].items() if k.startswith("event:")}
        self.fires({**ledger, "accepted": events}, tid, "event", "event", trigger_id=tid)
        run_count = int(self.r.hget(self.keys.trigger(tid), "run_count") or 0)
        self.expect(run_count == len(events), f"mixed: event trigger run_count {run_count} != {len(events)} accepted")
        manual = {k: v for k, v in ledger["accepted"].items() if k.startswith("manual:")}
        self.fires({**ledger, "accepted": manual}, f"wf:{template}", "manual", "manual", trigger_id=None)
        return {"events": len(events), "manual": len(manual), "duplicates": ledger["duplicates"],
                "submitted": len(ledger["submitted"])}

    def submitted_finish(self, ledger: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        statuses: list[str] = []
        while True:
            pipe = self.r.pipeline(transaction=False)
            for wf_id in ledger["submitted"]:
                pipe.hget(self.keys.workflow(wf_id), "status")
            statuses = [_s(s) if s else "missing" for s in pipe.execute()]
            if all(s in ("completed", "failed", "cancelled", "missing") for s in statuses) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        bad = [(w, s) for w, s in zip(ledger["submitted"], statuses, strict=True) if s != "completed"]
        self.expect(not bad, f"{ledger['scenario']}: {len(bad)} submitted workflows did not complete, e.g. {bad[:3]}")
        return {"submitted": len(statuses), "completed": statuses.count("completed")}


def check(scenarios: list[str]) -> int:
    conn = redis.Redis.from_url(redis_url())
    checker = Checker(conn, Keyspace("flow"))
    results: dict[str, Any] = {}
    for name in scenarios:
        path = REPORTS / f"{name}-ledger.json"
        if not path.exists():
            checker.problems.append(f"{name}: no ledger at {path} (did the locust run start?)")
            continue
        ledger = json.loads(path.read_text())
        if name == "webhooks":
            results[name] = checker.webhooks(ledger)
        elif name == "mixed":
            results[name] = {**checker.mixed(ledger), **checker.submitted_finish(ledger)}
        elif name == "submit":
            results[name] = checker.submitted_finish(ledger)
        checker.expect(not ledger["errors"], f"{name}: {len(ledger['errors'])} unexpected answers, e.g. {ledger['errors'][:2]}")
    report = {"ok": not checker.problems, "results": results, "problems": checker.problems}
    (REPORTS / "check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(check(sys.argv[1:] or ["webhooks", "mixed", "submit"]))
