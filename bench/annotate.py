"""Benchmark: 40 annotator processes on one project; time from a submitted answer to the next item ready.

    python bench/annotate.py [--annotators 40] [--items 600] [--paced-items 240] [--overlap 3] [--pg-url ...]

Each annotator is a separate process with its own database connection, labelling until the
project is done. The time measured is that of `submit_and_next` (the call the panel makes on
Enter: check and store the answer, then lease the next item), on SQLite and on PostgreSQL.
All processes start up (imports, connection) first and begin together, so start-up is not
measured. Three loads per database, in one run:
- one annotator alone, unpaced (the baseline the ratios compare with);
- `--annotators` people who look at each item for a random 0-2 s (about 20 answers/s in all);
- `--annotators` bots that submit back to back with no pause (saturation).
Targets (issue 10): paced p95 <= 30 ms on both databases; unpaced PostgreSQL >= 300 answers/s
with p95 <= 150 ms; unpaced SQLite p99 <= 250 ms. The figures before row-level leasing
(one lock per project), measured by the review with 40 processes, 600 items, overlap 3:
paced p95 53 ms (SQLite) / 82 ms (PostgreSQL); unpaced p95 1,551 ms / 802 ms. With row-level
leasing, before SQLite's writer queue and the five prebuilt statements (quiet machine):
unpaced SQLite p50 1.4 / p95 4.7 / p99 1,039 ms at 536 answers/s; PostgreSQL p50 148 / p95 212 /
p99 238 ms at 244 answers/s.
Reading the unpaced rows: 40 bots that never pause wait, on average, for the other 39 (Little's
law: mean time ~ annotators / answers per second), so a fair database gives every answer about
the same time, and p50 is near that mean (tens of ms). A low p50 with a huge p99 means some
processes got the lock again and again while others starved (SQLite's busy wait before its
writer queue).
On a shared machine with few cores the 40 processes compete for CPU with the database:
each row gives the 1-minute load average when its load started (other work) and ended (its
own processes included), and the CPU the annotator processes and PostgreSQL spent per answer
(less noisy than times on a shared machine). The header names the fsml_nb copy measured:
run it with PYTHONPATH pointing at another checkout to compare two versions, back to back:

    PYTHONPATH=/path/to/old/checkout python bench/annotate.py
    PYTHONPATH=$PWD python bench/annotate.py
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsml_nb
from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store
from fsml_nb.testing import scratch_postgres_database

SCHEMA = LabelSchema("single_label", ("cat", "dog"))


def annotator_worker(db_url: str, blob_url: str, project: str, name: str, pace: float, ready, start, queue) -> None:
    "Label until the project has nothing left for `name`; send back each submit_and_next time (ms) and any error."
    timings, error, cpu, server_cpu = [], None, 0.0, float("nan")
    pause = random.Random(name)
    try:
        with Store(db_url, blob_url) as store:
            ready.release()
            start.wait()
            handle = store.project(project)
            backend = None
            if db_url.startswith("postgresql"):
                with store.engine.connect() as connection:  # the pool hands this one connection back each time
                    backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            server_began = process_cpu_seconds(backend)
            cpu_began = time.process_time()
            task = handle.lease_next(name)
            while task is not None:
                if pace:
                    time.sleep(pause.uniform(0, 2 * pace))
                began = time.perf_counter()
                _, task = handle.submit_and_next(name, task.item_sha256, "cat" if len(name) % 2 else "dog")
                timings.append((time.perf_counter() - began) * 1000)
            cpu = time.process_time() - cpu_began
            server_cpu = process_cpu_seconds(backend) - server_began
    except Exception as failure:  # reported in the table, not lost in a hung run
        error = str(failure).splitlines()[0]
        ready.release()
    queue.put((timings, time.time(), error, cpu, server_cpu))


@dataclass
class Measured:
    "One load's figures."
    timings: list[float]  # every submit_and_next time, ms
    rate: float  # answers per second over the whole run
    errors: list[str]  # the workers' errors
    load_before: float  # 1-minute load average when the load started (other work on the machine)
    load_after: float  # ... when it ended (this load included)
    client_cpu_ms: float  # annotator processes' CPU per answer
    server_cpu_ms: float  # CPU of the annotators' PostgreSQL backends per answer (NaN on SQLite)


def process_cpu_seconds(pid: int | None) -> float:
    "CPU seconds a process (a PostgreSQL backend) has used so far; NaN without one or without /proc."
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(db_url: str, blob_url: str, annotators: int, items: int, overlap: int, pace: float) -> Measured:
    "Measure one load: all annotator processes label one new project until it is done."
    project = f"bench-{uuid.uuid4().hex[:8]}"
    names = [f"{project}-a{index:02d}" for index in range(annotators)]
    with Store(db_url, blob_url) as store:
        version = store.import_version([LabelledItem(NewItem(f"{project} {i}".encode(), "text/plain"), "cat", "train")
                                        for i in range(items)], SCHEMA, project, source="bench")
        store.create_project(project, version, overlap=overlap)
        for name in names:
            store.annotators.add(name, projects=[project])
    context = multiprocessing.get_context("fork")  # no engine is open here: each child opens its own
    ready, start, queue = context.Semaphore(0), context.Event(), context.Queue()
    processes = [context.Process(target=annotator_worker,
                                 args=(db_url, blob_url, project, name, pace, ready, start, queue))
                 for name in names]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire(timeout=600)
    load_before = os.getloadavg()[0]
    began = time.time()
    start.set()
    results = [queue.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    timings = [t for worker_timings, *_ in results for t in worker_timings]
    errors = [error for _, _, error, *_ in results if error]
    answers = max(len(timings), 1)
    return Measured(timings, len(timings) / (max(finished for _, finished, *_ in results) - began), errors,
                    load_before, os.getloadavg()[0], 1000 * sum(cpu for *_, cpu, _ in results) / answers,
                    1000 * sum(server for *_, server in results) / answers)


def percentile(values: list[float], share: int) -> float:
    "The `share`-th percentile (NaN with fewer than two values: the workers failed)."
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[share - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=40)
    parser.add_argument("--items", type=int, default=600, help="items of the unpaced load")
    parser.add_argument("--paced-items", type=int, default=240, help="items of the paced load (fewer: it sleeps)")
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--pace", type=float, default=1.0, help="mean seconds a person looks at an item (0-2x)")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--loads", default="alone,paced,unpaced", help="which loads to run (alone is the baseline)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    loads = {"alone": ("alone (baseline)", 1, max(60, args.items // 10), 1, 0.0),
             "paced": (f"paced (0-{2 * args.pace:g} s)", args.annotators, args.paced_items, args.overlap, args.pace),
             "unpaced": ("unpaced", args.annotators, args.items, args.overlap, 0.0)}
    loads = [loads[name.strip()] for name in args.loads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        blob_url = str(Path(tmp) / "blobs")
        for backend in args.databases.split(","):
            try:
                if backend == "sqlite":
                    for load in loads:
                        rows.append((backend, *load, run(f"sqlite:///{tmp}/fsml.db", blob_url, *load[1:])))
                else:
                    with scratch_postgres_database(args.pg_url) as pg_url:
                        for load in loads:
                            rows.append((backend, *load, run(pg_url, blob_url, *load[1:])))
            except Exception as error:  # report what could be measured
                print(f"({backend} stopped: {str(error).splitlines()[0]})")
    print(f"\n## Submit -> next item ready, server side (ms); {os.cpu_count()} cores; "
          f"fsml_nb from {Path(fsml_nb.__file__).parent}\n")
    print("| database | load | annotators | answers | p50 | p95 | p99 | p95 / alone | answers/s | "
          "client CPU ms/answer | server CPU ms/answer | load avg before -> after | failed workers |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    alone = {}
    for backend, load, annotators, _items, _overlap, _pace, measured in rows:
        timings = measured.timings
        p95 = percentile(timings, 95)
        alone.setdefault(backend, p95)
        failed = f"{len(measured.errors)}: {measured.errors[0]}" if measured.errors else "0"
        median = statistics.median(timings) if timings else float("nan")
        print(f"| {backend} | {load} | {annotators} | {len(timings)} | {median:.1f} | "
              f"{p95:.1f} | {percentile(timings, 99):.1f} | {p95 / alone[backend]:.1f}x | {measured.rate:.0f} | "
              f"{measured.client_cpu_ms:.2f} | {measured.server_cpu_ms:.2f} | "
              f"{measured.load_before:.1f} -> {measured.load_after:.1f} | {failed} |")


if __name__ == "__main__":
    main()
