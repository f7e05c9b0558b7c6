"""Benchmark: the SQL broker's lease + finish of N jobs, per checkout (before/after), on SQLite and PostgreSQL.

    python bench/serve_lease.py --code /tmp/base,. [--jobs 400] [--batch 1,8] [--repeat 3]

For each checkout (`--code`: the first is the baseline), database and batch size, a subprocess of that checkout
publishes `--jobs` jobs to a fresh `SqlBroker` (a SQLite file; a scratch PostgreSQL database), then leases them
`--batch` at a time (`SqlBroker._lease`), heartbeats them once and finishes them (`finish_many`), and reports the
CPU time of that process (time.process_time) per job for the lease+finish, and for the heartbeat. Checkouts are run
interleaved, `--repeat` times; the table gives medians and the ratio to the first checkout, with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MEASURE = r'''
import json, sys, tempfile, time
from fsml_nb.serve import SqlBroker
from fsml_nb.testing import scratch_postgres_database
from contextlib import nullcontext

kind, jobs, batch, pg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
place = scratch_postgres_database(pg, prefix="fsml_bench") if kind == "postgresql" else nullcontext(
    f"sqlite:///{tempfile.mkdtemp(prefix='fsml-lease-')}/broker.db")
with place as url:
    broker = SqlBroker(url)
    broker.publish_many([("q", {"id": f"job-{n}", "input": n}) for n in range(jobs)])
    for _ in range(3):  # warm up: compile caches, connections
        taken = broker._lease("q", "warm", 1)
        broker.finish_many("warm", [(delivery, {"ok": True}) for delivery in taken])
    done, lease_cpu, beat_cpu = 3, 0.0, 0.0
    while True:
        started = time.process_time()
        taken = broker._lease("q", "w", batch)
        if not taken:
            break
        middle = time.process_time()
        broker.heartbeat("w", taken)
        after_beat = time.process_time()
        broker.finish_many("w", [(delivery, {"ok": True}) for delivery in taken])
        lease_cpu += (middle - started) + (time.process_time() - after_beat)
        beat_cpu += after_beat - middle
        done += len(taken)
    assert done == jobs, (done, jobs)
    broker.close()
print(json.dumps({"lease_finish_us": lease_cpu / (jobs - 3) * 1e6, "heartbeat_us": beat_cpu / (jobs - 3) * 1e6}))
'''


def measure(code: str, kind: str, jobs: int, batch: int, pg: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(Path(code).resolve())}
    result = subprocess.run([sys.executable, "-c", MEASURE, kind, str(jobs), str(batch), pg], env=environment,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{code} {kind}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=".", help="checkouts, comma-separated; the first is the baseline")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", default="sqlite,postgresql")
    parser.add_argument("--pg", default=os.environ.get("FSML_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    options = parser.parse_args()
    codes, batches, kinds = options.code.split(","), [int(b) for b in options.batch.split(",")], options.kinds.split(",")
    results: dict = {}
    for turn in range(options.repeat):
        print(f"turn {turn + 1}/{options.repeat}, load average {os.getloadavg()[0]:.2f}", flush=True)
        for kind in kinds:
            for batch in batches:
                for code in codes:  # interleaved: the machine's load falls on every checkout alike
                    results.setdefault((kind, batch, code), []).append(measure(code, kind, options.jobs, batch, options.pg))
    print(f"\nCPU µs per job (median of {options.repeat}), load average now {os.getloadavg()}")
    print(f"{'database':<11}{'batch':>6}  {'checkout':<28}{'lease+finish':>13}{'ratio':>7}{'heartbeat':>11}{'ratio':>7}")
    for kind in kinds:
        for batch in batches:
            base = {key: statistics.median(r[key] for r in results[(kind, batch, codes[0])])
                    for key in ("lease_finish_us", "heartbeat_us")}
            for code in codes:
                med = {key: statistics.median(r[key] for r in results[(kind, batch, code)]) for key in base}
                print(f"{kind:<11}{batch:>6}  {code[-28:]:<28}{med['lease_finish_us']:>13.1f}"
                      f"{med['lease_finish_us'] / base['lease_finish_us']:>7.2f}{med['heartbeat_us']:>11.1f}"
                      f"{med['heartbeat_us'] / base['heartbeat_us']:>7.2f}")


if __name__ == "__main__":
    main()
