"""``make loadtest``: run the locust scenarios headless against the local stack, check the counts,
measure event -> first step latency, and write the figures to BENCHMARKS.md (section ``loadtest``).

    python -m loadtests.run [--time 20s] [--scenarios webhooks,mixed,submit] [--no-bench]

Reports (HTML, CSV, ledgers, check.json) go to loadtests/reports/. The exit status is 1 when the
count check fails; figures that miss their goal are printed, not failed.
"""

from __future__ import annotations

import argparse
import csv
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.sections import upsert
from loadtests import check, latency
from loadtests.common import REPORTS, gateway_url

REPO = Path(__file__).resolve().parent.parent
# scenario -> (locust file, users, spawn rate)
SCENARIOS: dict[str, tuple[str, int, int]] = {
    "webhooks": ("locustfile_webhooks.py", 32, 32),
    "mixed": ("locustfile_mixed.py", 16, 16),
    "submit": ("locustfile_submit.py", 6, 6),
}


def run_locust(name: str, run_time: str) -> None:
    locustfile, users, rate = SCENARIOS[name]
    cmd = [
        sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / locustfile), "--headless",
        "-u", str(users), "-r", str(rate), "-t", run_time, "--host", gateway_url(),
        "--csv", str(REPORTS / name), "--html", str(REPORTS / f"{name}.html"), "--only-summary",
        "--stop-timeout", "10", "--exit-code-on-error", "0",
    ]
    print(f"== locust {name}: {users} users for {run_time}", flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def stats(name: str) -> dict[str, dict[str, float]]:
    """Locust's per-request-name figures from its CSV."""
    rows: dict[str, dict[str, float]] = {}
    with open(REPORTS / f"{name}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["Name"]] = {
                "count": float(row["Request Count"]), "failures": float(row["Failure Count"]),
                "rps": float(row["Requests/s"]), "p50": float(row["50%"] or 0), "p99": float(row["99%"] or 0),
            }
    return rows


def section(run_time: str, figures: dict[str, Any], lats: list[dict[str, Any]], checked: bool) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Load tests (locust, `make loadtest`)",
        "",
        f"Measured on {when}, {platform.machine()}, everything (Redis, engine, gateway, worker, pool, two",
        f"schedulers... and locust itself) on this 2-core machine; each scenario ran {run_time}.",
        f"Count check after the runs: {'passed' if checked else 'FAILED (see loadtests/reports/check.json)'}.",
        "",
        "| scenario / request | requests | failures | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for scenario, rows in figures.items():
        for name, row in rows.items():
            lines.append(f"| {scenario}: {name} | {row['count']:.0f} | {row['failures']:.0f} | {row['rps']:.0f} | "
                         f"{row['p50']:.0f} | {row['p99']:.0f} |")
    hooks = figures.get("webhooks", {})
    fresh, agg = hooks.get("webhook (fresh)"), hooks.get("Aggregated")
    if fresh and agg:
        lines += ["", f"- Webhook intake: {fresh['rps']:.0f} accepted deliveries/s that started a workflow "
                  f"({agg['rps']:.0f} requests/s with replays and bad signatures), p50 {agg['p50']:.0f} ms, "
                  f"p99 {agg['p99']:.0f} ms. Goal: >= 2,000 accepted events/s with p99 <= 50 ms."]
    for lat in lats:
        lines += [
            f"- Event -> first step started, {lat['events']} events at {lat['rate_per_s']:.0f}/s: p50 "
            f"{lat['to_step_p50_ms']:.0f} ms, p95 {lat['to_step_p95_ms']:.0f} ms (worker claim: p50 "
            f"{lat['to_claim_p50_ms']:.0f} ms, p95 {lat['to_claim_p95_ms']:.0f} ms); intake answer p50 "
            f"{lat['intake_p50_ms']:.1f} ms, p99 {lat['intake_p99_ms']:.1f} ms; {lat['lost']} events without a "
            "started step. Goal: <= 50 ms p95 at 100 events/s.",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time", default="20s", help="locust run time per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-bench", action="store_true", help="skip the latency run and BENCHMARKS.md")
    args = parser.parse_args()
    names = [n for n in args.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; use {list(SCENARIOS)}")
    REPORTS.mkdir(exist_ok=True)
    figures = {}
    for name in names:
        run_locust(name, args.time)
        figures[name] = stats(name)
        time.sleep(1)
    status = check.check(names)
    if not args.no_bench:
        # At a rate the stack sustains, and at the goal's 100/s (where, on 2 cores, steps queue up).
        lats = [latency.measure(rate=rate, seconds=10) for rate in (20, 100)]
        upsert(REPO / "BENCHMARKS.md", "loadtest", section(args.time, figures, lats, status == 0))
        print("wrote BENCHMARKS.md (section loadtest)")
    return status


if __name__ == "__main__":
    sys.exit(main())
