"""Benchmark: 20 concurrent annotators; server-side time from a submitted answer to the next item ready.

    python bench/annotate.py [--annotators 20] [--items 1000] [--overlap 2] [--think 0.5] [--pg-url ...]

Each annotator is a separate process with its own database connection, labelling until the
project is done. The time measured is that of `submit_and_next` (the call the panel makes on
Enter: check and store the answer, then lease the next item), on SQLite and on PostgreSQL.
Three loads, in one run:
- one annotator alone (the baseline);
- 20 annotators who look at each item for a random 0-2x `--think` seconds (0.5 s mean: far
  faster than people label, about 40 answers/s in all);
- 20 bots that submit back to back with no pause: a saturation test of the project lock.
Target: p95 <= 50 ms with 20 annotators.
"""
from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path


from fsml_nb.annotate import add_annotator, create_project, lease_next, submit_and_next
from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store
from fsml_nb.testing import scratch_postgres_database

SCHEMA = LabelSchema("single_label", ("cat", "dog"))


def annotator_worker(db_url: str, blob_url: str, project: str, name: str, think: float, queue) -> None:
    timings = []
    pause = random.Random(name)
    with Store(db_url, blob_url) as store:
        task = lease_next(store, project, name)
        while task is not None:
            if think:
                time.sleep(pause.uniform(0, 2 * think))
            start = time.perf_counter()
            _, task = submit_and_next(store, project, name, task.item_sha256, "cat" if len(name) % 2 else "dog")
            timings.append((time.perf_counter() - start) * 1000)
    queue.put(timings)


def run(db_url: str, blob_url: str, annotators: int, items: int, overlap: int, think: float) -> list[float]:
    project = f"bench-{uuid.uuid4().hex[:8]}"
    with Store(db_url, blob_url) as store:
        version = store.import_version([LabelledItem(NewItem(f"{project} {i}".encode(), "text/plain"), "cat", "train")
                                        for i in range(items)], SCHEMA, project, source="bench")
        create_project(store, project, version, overlap=overlap)
        names = [f"{project}-a{index:02d}" for index in range(annotators)]
        for name in names:
            add_annotator(store, name)
    queue = multiprocessing.get_context("spawn").Queue()
    processes = [multiprocessing.get_context("spawn").Process(target=annotator_worker,
                                                              args=(db_url, blob_url, project, name, think, queue))
                 for name in names]
    for process in processes:
        process.start()
    timings = [t for _ in processes for t in queue.get(timeout=1800)]
    for process in processes:
        process.join()
    return timings


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100)[int(share) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--think", type=float, default=0.5, help="mean seconds an annotator looks at an item")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        blob_url = str(Path(tmp) / "blobs")
        backends = [("sqlite", f"sqlite:///{tmp}/fsml.db")]
        try:
            with scratch_postgres_database(args.pg_url) as pg_url:
                backends.append(("postgresql", pg_url))
                loads = [("alone", 1, max(100, args.items // 10), 1, 0.0),
                         (f"paced ({args.think:g} s)", args.annotators, args.items // 2, args.overlap, args.think),
                         ("saturated (no pause)", args.annotators, args.items, args.overlap, 0.0)]
                for backend, url in backends:
                    for load, annotators, items, overlap, think in loads:
                        timings = run(url, blob_url, annotators, items, overlap, think)
                        rows.append((backend, load, annotators, len(timings), statistics.median(timings),
                                     percentile(timings, 95), max(timings)))
        except Exception as error:  # report what could be measured
            print(f"(stopped: {str(error).splitlines()[0]})")
    print("\n## Submit -> next item ready, server side (ms)\n")
    print("| database | load | annotators | answers | p50 | p95 | max |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for backend, load, annotators, count, p50, p95, worst in rows:
        print(f"| {backend} | {load} | {annotators} | {count} | {p50:.1f} | {p95:.1f} | {worst:.1f} |")


if __name__ == "__main__":
    main()
