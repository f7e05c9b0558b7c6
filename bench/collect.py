"""Benchmark: the crawler against the local fixture site (127.0.0.1 only), on SQLite and PostgreSQL.

    python bench/collect.py [--pages 300] [--workers 4] [--pg-url postgresql://postgres@127.0.0.1:5432/test]

Prints two Markdown tables:
1. throughput with the rate limit off (delay 0, no Crawl-delay, up to 8 requests per host at once):
   URLs fetched per second (pages and their images; robots.txt not counted) by one crawler process
   and by two processes sharing one frontier, each process with --workers threads. The site runs in
   its own process so that it does not share the crawlers' interpreter lock.
2. politeness: two hosts (two ports) crawled together by two processes, one host with a robots.txt
   Crawl-delay longer than the crawl's delay, one without; for each, the configured (effective) delay
   and the spacing between consecutive requests as that host's server logged their arrival.
   The minimum must never be below the effective delay.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path


from fsml_nb.collect import CrawlConfig, Frontier, crawl_summary
from fsml_nb.store import Store
from fsml_nb.testing import scratch_postgres_database

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fixture_site import FixtureSite  # noqa: E402

WORKER = """
import json, sys, time
from fsml_nb.collect import CrawlConfig, Crawler
from fsml_nb.store import Store
db_url, blob_url, crawl_id, rules, workers, start_at = sys.argv[1:7]
with Store(db_url, blob_url) as store:
    crawler = Crawler(CrawlConfig(**json.loads(rules)), store=store, crawl_id=crawl_id, workers=int(workers))
    time.sleep(max(0.0, float(start_at) - time.time()))
    crawler.run()
print(json.dumps({"ended": time.time(), "outcomes": dict(crawler.run_outcomes)}))
"""


def _serve(connection, options: dict) -> None:
    with FixtureSite(**options) as site:
        connection.send(site.base)
        connection.recv()  # wait for "stop"
        connection.send(site.times())


@contextmanager
def site_process(**options) -> Iterator[tuple[str, list[float]]]:
    "A FixtureSite in its own process; yields its base URL and, after the block, its request times."
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_serve, args=(child, options), daemon=True)
    process.start()
    times: list[float] = []
    try:
        yield parent.recv(), times
    finally:
        parent.send("stop")
        times.extend(parent.recv())
        process.join(10)


def run_crawl(db_url: str, blobs: str, crawl_id: str, rules: CrawlConfig, processes: int, workers: int) -> float:
    "Crawl with `processes` worker processes sharing one frontier; return the wall time from their common start."
    with Store(db_url, blobs) as store:
        Frontier(store, rules, crawl_id)
    start_at = time.time() + 3.0  # every process has imported and connected by then
    commands = [[sys.executable, "-c", WORKER, db_url, blobs, crawl_id, json.dumps(rules.to_dict()), str(workers),
                 str(start_at)] for _ in range(processes)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
               for command in commands]
    ended = []
    for process in running:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"a crawler process failed:\n{err}")
        ended.append(json.loads(out.strip().splitlines()[-1])["ended"])
    return max(ended) - start_at


def throughput(db_url: str, tmp: Path, pages: int, workers: int) -> list[tuple]:
    rows = []
    for processes in (1, 2):
        with site_process(traps=False, pages=pages, crawl_delay=None) as (base, _):
            rules = CrawlConfig([f"{base}/"], max_depth=64, max_pages=None, delay=0.0, max_per_host=8, timeout=10)
            crawl_id = f"bench-{processes}"
            seconds = run_crawl(db_url, str(tmp / "blobs"), crawl_id, rules, processes, workers)
            with Store(db_url, str(tmp / "blobs")) as store:
                summary = crawl_summary(store, crawl_id)
        assert summary.queued == 0 and summary.fetched == 2 * pages + 1, summary
        rows.append((processes, workers, summary.fetched, seconds, summary.fetched / seconds))
    return rows


def politeness(db_url: str, tmp: Path, workers: int) -> list[tuple]:
    config_delay, robots_delay, pages = 0.1, 0.25, 12
    with site_process(traps=False, pages=pages, crawl_delay=robots_delay) as (slow_base, slow_times), \
            site_process(traps=False, pages=pages, crawl_delay=None) as (plain_base, plain_times):
        rules = CrawlConfig([f"{slow_base}/", f"{plain_base}/"], max_depth=64, max_pages=None, delay=config_delay,
                            max_per_host=8)
        run_crawl(db_url, str(tmp / "blobs"), "polite", rules, 2, workers)
    rows = []
    for label, effective, times in ((f"robots.txt Crawl-delay {robots_delay} s", robots_delay, slow_times),
                                    ("no Crawl-delay", config_delay, plain_times)):
        gaps = [later - earlier for earlier, later in pairwise(sorted(times))]
        rows.append((label, effective, len(times), min(gaps), sum(gaps) / len(gaps), min(gaps) >= effective))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=300, help="pages of the site (each has one image)")
    parser.add_argument("--workers", type=int, default=4, help="threads per crawler process")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    results: dict[str, tuple[list, list]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sqlite_url = f"sqlite:///{tmp}/bench.db"
        results["sqlite"] = (throughput(sqlite_url, tmp, args.pages, args.workers), politeness(sqlite_url, tmp, 2))
        try:
            with scratch_postgres_database(args.pg_url) as pg_url:
                results["postgresql"] = (throughput(pg_url, tmp, args.pages, args.workers),
                                         politeness(pg_url, tmp, 2))
        except Exception as error:  # a benchmark reports what it could not measure
            print(f"\n(PostgreSQL not measured: {str(error).splitlines()[0]})")

    print(f"\n## Crawl throughput, rate limit off ({args.pages} pages + {args.pages} images on 127.0.0.1)\n")
    print("| database | processes | threads each | URLs fetched | seconds | URLs/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for backend, (rows, _) in results.items():
        for processes, workers, fetched, seconds, rate in rows:
            print(f"| {backend} | {processes} | {workers} | {fetched} | {seconds:.2f} | {rate:.0f} |")
    print("\n## Politeness: spacing of requests per host, as each server logged them (2 processes x 2 threads)\n")
    print("| database | host | effective delay (s) | requests | min spacing (s) | mean spacing (s) | min >= delay |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for backend, (_, rows) in results.items():
        for label, effective, count, smallest, mean, ok in rows:
            print(f"| {backend} | {label} | {effective:.3f} | {count} | {smallest:.4f} | {mean:.4f} | "
                  f"{'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
