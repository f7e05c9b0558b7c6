"""The crawler against a local fixture site, on SQLite and PostgreSQL: every trap ends as the rules say,
provenance and licences are kept, crawls resume without refetching, and two processes share one frontier.

Nothing here contacts anything but 127.0.0.1: the fixture site logs what it answered, and a recording
transport logs every request the crawler's client sent.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from itertools import pairwise
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from fsml_nb.collect import (FINISHED, LIMIT_REACHED, CrawlConfig, Crawler, Frontier, crawl_summary, crawled_items,
                             page_claims)
from fsml_nb.db import crawl_urls, crawls
from fsml_nb.store import Entry, LabelSchema, Store

sys.path.insert(0, str(Path(__file__).parent))
from fixture_site import BOMB_SIZE, CAP, CAT, FixtureSite, gzip_bomb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRAWL_DELAY = 0.02  # the fixture's robots.txt Crawl-delay


class RecordingTransport(httpx.HTTPTransport):
    "Every request the crawler's client really sends."

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return super().handle_request(request)


def trap_rules(base: str, **overrides) -> CrawlConfig:
    rules = dict(start_urls=[f"{base}/"], allowed_domains=["127.0.0.1"], max_depth=4, max_pages=None,
                 max_response_bytes=CAP, delay=0.0, timeout=0.3, max_attempts=3, backoff=0.01, lease_seconds=5.0,
                 allow_private_addresses=True)  # the fixture site is on 127.0.0.1
    return CrawlConfig(**{**rules, **overrides})


def outcomes(store: Store, crawl_id: str, base: str) -> dict[str, tuple[str, str]]:
    "URL (relative to the site when on it) -> (status, outcome)."
    with store.engine.connect() as connection:
        rows = connection.execute(select(crawl_urls.c.url, crawl_urls.c.status, crawl_urls.c.outcome)
                                  .where(crawl_urls.c.crawl_id == crawl_id)).all()
    return {url.removeprefix(base): (status, outcome) for url, status, outcome in rows}


@pytest.fixture(scope="module")
def pg_server_for_module(request) -> str:
    return request.getfixturevalue("postgres_server_url")


def _fresh_pg_database(server_url: str) -> tuple[str, callable]:
    name = f"fsml_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def crawled(request, tmp_path_factory) -> Iterator[dict]:
    "One crawl of the trap site per backend, shared by the checks below."
    folder = tmp_path_factory.mktemp(f"crawl-{request.param}")
    drop = None
    if request.param == "sqlite":
        db_url = f"sqlite:///{folder}/fsml.db"
    else:
        db_url, drop = _fresh_pg_database(request.getfixturevalue("postgres_server_url"))
    transport = RecordingTransport()
    with FixtureSite(crawl_delay=CRAWL_DELAY, slow_seconds=1.0) as site, \
            Store(db_url, str(folder / "blobs")) as store:
        crawler = Crawler(trap_rules(site.base), store=store, crawl_id="traps", workers=4, transport=transport)
        summary = crawler.run()
        yield {"site": site, "store": store, "summary": summary, "transport": transport,
               "outcomes": outcomes(store, "traps", site.base), "items": crawled_items(store, "traps")}
    if drop:
        drop()


EXPECTED = {
    "/robots.txt": ("done", "robots_txt"),
    "/": ("done", "page"), "/gallery.html": ("done", "page"), "/cc.html": ("done", "page"),
    "/latin1.html": ("done", "page"), "/se%C3%B1or.html": ("done", "page"),
    "/private/secret.html": ("skipped", "robots"), "/private/hidden.png": ("skipped", "robots"),
    "/loop/a": ("done", "redirect"), "/loop/b": ("failed", "redirect_loop"),
    **{f"/calendar?month={month}": ("done", "page") for month in (1, 2, 3, 4)},
    "/calendar?month=5": ("skipped", "max_depth"),
    "/big.html": ("skipped", "too_large"), "/img/huge.png": ("skipped", "too_large"),
    "/data.bin": ("skipped", "content_type"), "/img/fake.png": ("skipped", "content_type"),
    "/img/truncated.png": ("failed", "bad_image"), "/img/html.png": ("failed", "bad_image"),
    "/flaky.html": ("done", "page"), "/broken.html": ("failed", "http_500"),
    "/slow.html": ("failed", "timeout"), "/slow-once.html": ("done", "page"),
    "/img/cat.png": ("done", "stored"), "/mirror/cat-copy.png": ("done", "duplicate"),
    "/img/dog.png": ("done", "stored"), "/img/bird.png": ("done", "stored"), "/img/linked.png": ("done", "stored"),
    "/img/caf%C3%A9.png": ("done", "stored"),
    "http://example.com/elsewhere": ("skipped", "off_domain"),
    "https://cdn.example.org/pic.png": ("skipped", "off_domain"),
    "https://creativecommons.org/publicdomain/zero/1.0/": ("skipped", "off_domain"),
}


def test_every_url_of_the_fixture_ends_as_the_rules_say(crawled):
    assert crawled["outcomes"] == EXPECTED
    summary = crawled["summary"]
    assert summary.stop_reason == FINISHED and summary.queued == 0
    assert (summary.stored, summary.duplicates, summary.skipped_by_robots) == (5, 1, 2)
    assert (summary.items, summary.licensed_items) == (5, 3)
    assert summary.errors == {"redirect_loop": 1, "bad_image": 2, "http_500": 1, "timeout": 1}
    assert summary.skipped == {"max_depth": 1, "too_large": 2, "content_type": 2, "off_domain": 3}


def test_nothing_outside_the_fixture_is_contacted_and_robots_is_obeyed(crawled):
    site = crawled["site"]
    assert crawled["transport"].urls and all(url.startswith(f"{site.base}/") for url in crawled["transport"].urls)
    paths = site.paths()
    assert not any(path.startswith("/private/") for path in paths)
    assert paths[0] == "/robots.txt" and paths.count("/robots.txt") == 1


def test_requests_keep_the_crawl_delay_as_the_server_saw_them(crawled):
    times = crawled["site"].times()
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert min(gaps) >= CRAWL_DELAY, f"two requests {min(gaps):.4f} s apart, Crawl-delay is {CRAWL_DELAY}"


def test_each_url_is_fetched_once_except_retries(crawled):
    counts = Counter(crawled["site"].paths())
    retried = {"/flaky.html": 3, "/broken.html": 3, "/slow.html": 3, "/slow-once.html": 2}
    assert {path: count for path, count in counts.items() if count > 1} == retried
    assert counts["/cc.html"] == 1  # also linked as /cc.html#licence and HTTP://..././cc.html?utm_source=mail
    assert counts["/loop/a"] == counts["/loop/b"] == 1  # the loop is noticed, not gone round
    assert sorted(path for path in counts if path.startswith("/calendar")) == [f"/calendar?month={m}" for m in (1, 2, 3, 4)]


def test_caps_cut_large_responses_without_reading_them(crawled):
    with crawled["store"].engine.connect() as connection:
        sizes = dict(connection.execute(select(crawl_urls.c.url, crawl_urls.c.size).where(
            crawl_urls.c.outcome == "too_large")).all())
    site = crawled["site"].base
    assert sizes[f"{site}/big.html"] == 0  # Content-Length said too much: nothing read
    assert CAP < sizes[f"{site}/img/huge.png"] <= CAP + 65536  # no Content-Length: cut just past the cap


def test_items_keep_their_provenance(crawled):
    items = {item.url.removeprefix(crawled["site"].base): item for item in crawled["items"]}
    assert set(items) == {"/img/cat.png", "/mirror/cat-copy.png", "/img/dog.png", "/img/bird.png",
                          "/img/linked.png", "/img/caf%C3%A9.png"}
    cat, copy = items["/img/cat.png"], items["/mirror/cat-copy.png"]
    assert cat.item_sha256 == copy.item_sha256  # the same image under two URLs is one item...
    assert (cat.page_url, copy.page_url) == (f"{crawled['site'].base}/", f"{crawled['site'].base}/gallery.html")
    assert (cat.alt, copy.alt) == ("A cat", "The same cat")  # ...with two sources
    assert crawled["store"].blobs.get(cat.item_sha256) == CAT
    assert items["/img/caf%C3%A9.png"].alt == "Café crème"  # read from a Windows-1252 page
    sources = crawled["store"].sources_of(cat.item_sha256)
    assert [source.headers["content-type"] for source in sources] == ["image/png", "image/png"]
    assert all(source.fetched_at.tzinfo and source.crawl_id == "traps" for source in sources)
    assert {item.media_type for item in items.values()} == {"image/png"}


def test_licences_are_found_and_unknown_ones_marked(crawled):
    items = {item.url.removeprefix(crawled["site"].base): item for item in crawled["items"]}
    assert items["/img/dog.png"].licence == "CC-BY-SA-4.0" and 'rel="license"' in items["/img/dog.png"].licence_evidence
    assert items["/img/bird.png"].licence == "CC0-1.0" and "<figure>" in items["/img/bird.png"].licence_evidence
    assert items["/img/linked.png"].licence == "CC-BY-4.0" and "Link:" in items["/img/linked.png"].licence_evidence
    assert items["/img/cat.png"].licence is None and items["/img/caf%C3%A9.png"].licence is None
    store = crawled["store"]
    assert store.get_item(items["/img/cat.png"].item_sha256).licence is None  # marked: no known licence
    unique = {item.item_sha256: item for item in crawled["items"]}
    entries = [Entry(sha, item.alt or "", "train") for sha, item in unique.items()]
    version = store.create_licensed_version(entries, LabelSchema("text"), "licensed captions")
    assert sorted(entry.label for entry in version.entries) == ["A bird", "A dog", "Licensed by header"]
    assert version.meta["excluded_items"] == 2


def test_retries_back_off_exponentially_and_honour_retry_after(tmp_path: Path):
    with FixtureSite(crawl_delay=None) as site, Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = CrawlConfig([f"{site.base}/broken.html", f"{site.base}/busy.html"], delay=0.0, backoff=0.2,
                            max_attempts=3, timeout=1.0, allow_private_addresses=True)
        Crawler(rules, store=store, workers=2).run()
        log = site.log
        final = outcomes(store, Frontier(store, rules).crawl_id, site.base)
    broken = [request.at for request in log if request.path == "/broken.html"]
    busy = [request.at for request in log if request.path == "/busy.html"]
    assert len(broken) == 3 and broken[1] - broken[0] >= 0.2 and broken[2] - broken[1] >= 0.4  # backoff 0.2 s, doubling
    assert len(busy) == 2 and busy[1] - busy[0] >= 1.0  # Retry-After: 1 beats the 0.2 s backoff
    assert final["/broken.html"] == ("failed", "http_500") and final["/busy.html"] == ("done", "page")


# --- resuming ----------------------------------------------------------------------------------------
def test_a_stopped_crawl_resumes_without_fetching_anything_twice(db_url: str, tmp_path: Path):
    with FixtureSite(crawl_delay=None) as site:
        rules = trap_rules(site.base, exclude=[r"/(flaky|broken|slow)"], max_pages=6)
        with Store(db_url, str(tmp_path / "blobs")) as store:
            first = Crawler(rules, store=store, crawl_id="resume", workers=3).run()
        assert first.stop_reason == LIMIT_REACHED and first.queued > 0

        unlimited = trap_rules(site.base, exclude=[r"/(flaky|broken|slow)"])
        with Store(db_url, str(tmp_path / "blobs")) as store:  # a new process would open the store anew
            interrupted = Crawler(unlimited, store=store, crawl_id="resume", workers=2)
            stopper = threading.Thread(target=_stop_after, args=(interrupted, 4))
            stopper.start()
            second = interrupted.run()
            stopper.join()
        assert second.stop_reason == "stopped" and second.queued > 0

        with Store(db_url, str(tmp_path / "blobs")) as store:
            third = Crawler(unlimited, store=store, crawl_id="resume", workers=3).run()
            final = outcomes(store, "resume", site.base)
        paths = site.paths()
    assert third.stop_reason == FINISHED and third.queued == 0
    assert len(paths) == len(set(paths)), Counter(paths).most_common(3)
    assert final["/img/cat.png"] == ("done", "stored") and final["/mirror/cat-copy.png"] == ("done", "duplicate")
    assert final["/flaky.html"] == ("skipped", "excluded")


def _stop_after(crawler: Crawler, results: int) -> None:
    deadline = time.monotonic() + 20
    while sum(crawler.run_outcomes.values()) < results and time.monotonic() < deadline:
        time.sleep(0.005)
    crawler.stop()


def test_a_dead_workers_lease_comes_back(tmp_path: Path):
    with FixtureSite(traps=False, pages=3, crawl_delay=None) as site, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = CrawlConfig([f"{site.base}/"], delay=0.0, timeout=0.2, lease_seconds=0.5, allow_private_addresses=True)
        frontier = Frontier(store, rules, "dead")
        abandoned = frontier.lease("a-worker-that-dies")
        assert abandoned.kind == "robots"
        summary = Crawler(rules, store=store, crawl_id="dead", workers=2).run()
        assert summary.stop_reason == FINISHED and summary.stored == 3
        assert frontier.complete(abandoned, _late_completion()) is None  # too late: the lease was taken back
        assert site.paths().count("/robots.txt") == 1


def _late_completion():
    from fsml_nb.collect import Completion
    return Completion("done", "robots_txt", time.time())


# --- two processes, one frontier -------------------------------------------------------------------
WORKER = """
import json, sys, time
from fsml_nb.collect import CrawlConfig, Crawler
from fsml_nb.store import Store
db_url, blob_url, rules, start_at = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
with Store(db_url, blob_url) as store:
    crawler = Crawler(CrawlConfig(**rules), store=store, crawl_id="shared", workers=2)
    time.sleep(max(0.0, start_at - time.time()))
    summary = crawler.run()
print(json.dumps({"name": crawler.name, "outcomes": dict(crawler.run_outcomes), "stop": summary.stop_reason}))
"""


def test_two_processes_share_one_frontier_and_fetch_no_page_twice(db_url: str, tmp_path: Path):
    pages = 40
    with FixtureSite(traps=False, pages=pages, crawl_delay=0.01, latency=0.005) as site:
        rules = CrawlConfig([f"{site.base}/"], max_depth=10, max_pages=None, delay=0.0, max_per_host=4, timeout=5,
                            allow_private_addresses=True)
        with Store(db_url, str(tmp_path / "blobs")) as store:
            Frontier(store, rules, "shared")  # the schema and the crawl exist before the workers start
        start_at = time.time() + 4.0
        processes = [subprocess.Popen([sys.executable, "-c", WORKER, db_url, str(tmp_path / "blobs"),
                                       json.dumps(rules.to_dict()), str(start_at)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                     for _ in range(2)]
        reports = []
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        with Store(db_url, str(tmp_path / "blobs")) as store:
            summary = crawl_summary(store, "shared")
            with store.engine.connect() as connection:
                rows = connection.execute(select(crawl_urls.c.url)).all()
        paths, times = site.paths(), site.times()
    assert len(paths) == len(set(paths)), Counter(paths).most_common(3)  # no page twice
    assert summary.queued == 0 and summary.stored == pages and summary.pages == pages + 1  # the start page too
    assert len(rows) == 2 * pages + 2  # robots.txt, the start page, pages and their images
    assert all(sum(report["outcomes"].values()) > 0 for report in reports), reports  # both did work
    assert min(later - earlier for earlier, later in pairwise(times)) >= 0.01  # Crawl-delay across processes


# --- politeness with several workers ---------------------------------------------------------------
@pytest.mark.parametrize("config_delay, robots_delay", [(0.03, 0.06), (0.06, 0.01)])
def test_the_longer_of_the_two_delays_spaces_requests(config_delay: float, robots_delay: float, tmp_path: Path):
    with FixtureSite(traps=False, pages=12, crawl_delay=robots_delay) as site, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = CrawlConfig([f"{site.base}/"], max_depth=10, delay=config_delay, max_per_host=4,
                            allow_private_addresses=True)
        Crawler(rules, store=store, workers=4).run()
        times = site.times()
    assert len(times) == 26  # robots.txt, the start page, 12 pages and their images
    assert min(later - earlier for earlier, later in pairwise(times)) >= max(config_delay, robots_delay)


# --- the command line -------------------------------------------------------------------------------
def test_fsml_collect_crawl_from_the_shell(db_url: str, tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("FSML_")}
    env.update(FSML_HOME=str(tmp_path / "home"), FSML_DB_URL=db_url, FSML_BLOB_URL=str(tmp_path / "blobs"))
    fsml = [str(Path(sys.executable).parent / "fsml")]
    with FixtureSite(crawl_delay=None, slow_seconds=0.5) as site:
        common = [f"{site.base}/", "--allow", "127.0.0.1", "--allow-private-addresses", "--delay", "0", "--timeout", "0.2", "--retries", "0",
                  "--max-response-bytes", "64KiB"]
        first = subprocess.run([*fsml, "collect", "crawl", *common, "--max-pages", "5"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "(new)" in first.stderr and "crawl crawl-" in first.stdout and "limit_reached" in first.stdout
        second = subprocess.run([*fsml, "collect", "crawl", *common, "--max-pages", "200", "--json"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        paths = site.paths()
    assert "(resuming)" in second.stderr and "url/s" in first.stderr  # the progress bar
    report = json.loads(second.stdout)
    assert report["stop_reason"] == "finished" and report["stored"] == 5 and report["duplicates"] == 1
    assert report["skipped_by_robots"] == 2
    assert report["errors"] == {"timeout": 2, "http_500": 2, "redirect_loop": 1, "bad_image": 2}
    assert len(paths) == len(set(paths))  # --retries 0: nothing at all twice, across both runs
    bad = subprocess.run([*fsml, "collect", "crawl", "ftp://example.com/"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip() == "fsml: error: start URL 'ftp://example.com/' is not an http(s) URL"


# --- issue 10: decompression bombs ----------------------------------------------------------------
def _crawl_traced(rules: CrawlConfig, store: Store, crawl_id: str, workers: int = 1):
    "Run a crawl under tracemalloc: its summary and the peak of Python memory while it ran."
    tracemalloc.start()
    try:
        summary = Crawler(rules, store=store, crawl_id=crawl_id, workers=workers).run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return summary, peak


def test_a_decompression_bomb_is_cut_while_streaming_and_does_not_end_the_crawl(tmp_path: Path):
    budget = 4 * 2**20  # far below what the bomb inflates to, far above what the crawl receives
    gzip_bomb()  # made once (0.7 s), before the crawl's short timeout runs
    with FixtureSite(crawl_delay=None) as site, Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = trap_rules(site.base, start_urls=[f"{site.base}/bomb/index.html"], max_total_bytes=budget)
        summary, peak = _crawl_traced(rules, store, "bomb")
        final = outcomes(store, "bomb", site.base)
        with store.engine.connect() as connection:
            charged = connection.execute(select(crawls.c.bytes_fetched).where(crawls.c.id == "bomb")).scalar()
            cut_at = connection.execute(select(crawl_urls.c.size).where(crawl_urls.c.url == f"{site.base}/bomb/1.png")).scalar()
    assert final["/bomb/1.png"] == ("skipped", "too_large")  # fetched first (the lowest id), skipped...
    assert final["/bomb/2.png"] == ("done", "stored") and final["/bomb/3.html"] == ("done", "page")  # ...and the crawl went on
    assert summary.stop_reason == FINISHED and summary.skipped == {"too_large": 1}
    assert CAP < cut_at <= CAP + 64 * 1024  # decoded bytes, cut just past the cap
    assert charged < 64 * 1024, charged  # the budget pays what came over the network (and what was stored), not BOMB_SIZE
    assert peak < 24 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB for a {BOMB_SIZE / 2**20:.0f} MiB bomb"


def test_a_robots_txt_bomb_is_read_up_to_512_kib_with_bounded_memory(tmp_path: Path):
    with FixtureSite(crawl_delay=None, robots_bomb=True) as site, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = trap_rules(site.base, start_urls=[f"{site.base}/gallery.html"])
        summary, peak = _crawl_traced(rules, store, "robots-bomb")
        final = outcomes(store, "robots-bomb", site.base)
    assert final["/robots.txt"] == ("done", "robots_txt")
    assert final["/private/hidden.png"] == ("skipped", "robots")  # its first 512 KiB were parsed: the rules hold
    assert "/private/hidden.png" not in site.paths() and summary.stop_reason == FINISHED
    assert peak < 24 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB"


# --- issue 10: a host that is down once --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fsml(db_url: str, tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FSML_")}
    env.update(FSML_HOME=str(tmp_path / "home"), FSML_DB_URL=db_url, FSML_BLOB_URL=str(tmp_path / "blobs"))
    return subprocess.run([str(Path(sys.executable).parent / "fsml"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_host_down_on_first_contact_is_reported_and_retried_on_the_next_run(tmp_path: Path):
    db_url, port = f"sqlite:///{tmp_path}/fsml.db", _free_port()
    start = f"http://127.0.0.1:{port}/"
    common = ["collect", "crawl", start, "--allow-private-addresses", "--delay", "0", "--timeout", "0.5",
              "--retries", "1", "--crawl", "down-once"]
    down = _fsml(db_url, tmp_path, *common)  # nothing listens on the port yet
    assert down.returncode == 1, (down.stdout, down.stderr)
    assert f"unreachable, robots.txt retried on the next run: http://127.0.0.1:{port} (connection)" in down.stdout
    assert "skipped by robots.txt: 0" in down.stdout and "robots_unreachable 1" in down.stdout
    assert "fsml: error: nothing could be fetched" in down.stderr
    with FixtureSite(crawl_delay=None, port=port) as site:
        up = _fsml(db_url, tmp_path, *common, "--json", "--max-depth", "0")
        paths = site.paths()
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["unreachable_hosts"] == {} and report["pages"] == 1 and report["stored"] >= 1
    assert paths[:2] == ["/robots.txt", "/"]


def test_a_5xx_robots_txt_blocks_the_host_for_now_only(tmp_path: Path):
    with FixtureSite(crawl_delay=None, robots_redirect="/broken.html") as site, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = trap_rules(site.base, start_urls=[f"{site.base}/gallery.html"], max_attempts=2)
        summary = Crawler(rules, store=store, crawl_id="5xx").run()
        final = outcomes(store, "5xx", site.base)
    assert final["/robots.txt"] == ("failed", "http_500") and final["/gallery.html"] == ("skipped", "robots_unreachable")
    assert summary.unreachable_hosts == {site.base: "http_500"} and summary.nothing_fetched
    assert site.paths() == ["/robots.txt", "/broken.html"] * 2  # retried, and nothing else asked for


# --- issue 10: scope is the origin; private addresses ------------------------------------------------
def test_a_page_cannot_steer_the_crawler_to_another_port(tmp_path: Path):
    with FixtureSite(crawl_delay=None) as site, FixtureSite(crawl_delay=None) as internal, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        start = [f"{site.base}/ports.html?to={internal.port}"]
        Crawler(trap_rules(site.base, start_urls=start, max_depth=1), store=store, crawl_id="ports").run()
        narrow = outcomes(store, "ports", site.base)
        assert internal.paths() == []
        wider = trap_rules(site.base, start_urls=start, max_depth=1,
                           allowed_domains=["127.0.0.1", f"127.0.0.1:{internal.port}"])
        Crawler(wider, store=store, crawl_id="ports-widened").run()
        assert internal.paths()[:2] == ["/robots.txt", "/"]  # the user widened the scope to that port
    assert narrow[f"{internal.base}/"] == ("skipped", "off_domain")


def test_names_that_resolve_to_private_addresses_are_refused_unless_allowed(tmp_path: Path):
    with FixtureSite(crawl_delay=None) as site, Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        named = f"http://localhost:{site.port}/"  # a name: the config cannot see where it leads
        refused = Crawler(CrawlConfig([named], delay=0.0), store=store, crawl_id="named").run()
        assert site.paths() == []
        assert refused.skipped == {"private_address": 1} and refused.nothing_fetched
        with pytest.raises(Exception, match="--allow-private-addresses allows it"):
            CrawlConfig([f"{site.base}/"])  # an address: refused at once
        allowed = Crawler(CrawlConfig([named], delay=0.0, allow_private_addresses=True), store=store,
                          crawl_id="named").run()  # the same crawl, resumed with the flag
    assert allowed.fetched >= 1 and "/" in site.paths()


class ControlledDns:
    "In-process DNS for names under .test: each lookup of a name takes the next answer of its list (the last repeats)."

    def __init__(self, monkeypatch, answers: dict[str, list[str]]):
        self.answers, self.lookups, self.connects = answers, Counter(), []
        self._getaddrinfo, self._create_connection = socket.getaddrinfo, socket.create_connection
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", self.create_connection)

    def getaddrinfo(self, host, port, *args, **kwargs):
        if not isinstance(host, str) or host not in self.answers:
            return self._getaddrinfo(host, port, *args, **kwargs)
        answers = self.answers[host]
        address = answers[min(self.lookups[host], len(answers) - 1)]
        self.lookups[host] += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    def create_connection(self, address, *args, **kwargs):
        "Connect as the socket module does; a public address is refused here (these tests never leave 127.0.0.1)."
        host, port = address
        target = self.getaddrinfo(host, port)[0][4][0] if host in self.answers else host
        self.connects.append(target)
        if target != "127.0.0.1":
            raise ConnectionRefusedError(f"test DNS: {target} stands for a public server; not contacted")
        return self._create_connection((target, port), *args, **kwargs)


PUBLIC = "93.184.216.34"  # a global address: never contacted (ControlledDns refuses it)


def test_dns_rebinding_cannot_reach_a_private_address(tmp_path: Path, monkeypatch):
    "A name answers a public address to the first lookup and 127.0.0.1 to the next: the crawler connects to what it checked."
    dns = ControlledDns(monkeypatch, {"rebind.test": [PUBLIC, "127.0.0.1"]})
    with FixtureSite(crawl_delay=None) as site, Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        start = f"http://rebind.test:{site.port}/"
        summary = Crawler(CrawlConfig([start], delay=0.0, timeout=0.5, max_attempts=2, backoff=0.01), store=store,
                          crawl_id="rebind").run()
        final = outcomes(store, "rebind", f"http://rebind.test:{site.port}")
    assert site.paths() == []  # nothing reached the private address
    assert dns.connects == [PUBLIC]  # the one connection went to the address that was checked
    assert dns.lookups["rebind.test"] == 2  # the retry looked the name up again, saw 127.0.0.1 and refused it
    assert final["/robots.txt"] == ("skipped", "private_address") and summary.nothing_fetched


def test_pinned_requests_keep_the_name_in_the_host_header(tmp_path: Path, monkeypatch):
    dns = ControlledDns(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    with FixtureSite(crawl_delay=None) as site, Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        start = f"http://pinned.test:{site.port}/gallery.html"
        summary = Crawler(CrawlConfig([start], delay=0.0, max_depth=0, allow_private_addresses=True), store=store,
                          crawl_id="pinned", workers=1).run()
    assert summary.stored >= 1 and site.paths()[:2] == ["/robots.txt", "/gallery.html"]
    assert set(site.hosts()) == {f"pinned.test:{site.port}"}  # the name, though the address was connected to
    assert set(dns.connects) == {"127.0.0.1"} and dns.lookups["pinned.test"] == len(dns.connects)  # once a connection


# --- issue 10: robots directives --------------------------------------------------------------------
def test_noindex_and_nofollow_from_meta_and_x_robots_tag_are_honoured(tmp_path: Path):
    with FixtureSite(crawl_delay=None) as site, Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = trap_rules(site.base, start_urls=[f"{site.base}/directives.html"], accept=["images", "text"])
        Crawler(rules, store=store, crawl_id="directives").run()
        final = outcomes(store, "directives", site.base)
        stored = {item.url.removeprefix(site.base) for item in crawled_items(store, "directives")}
    assert final["/directives.html"] == ("done", "page")  # <meta name="robots" content="noindex">: read, not stored
    assert final["/nofollow.html"] == ("done", "stored")  # X-Robots-Tag: nofollow only
    assert "/never.html" not in final and "/never.html" not in site.paths()  # its link was not queued
    assert final["/img/noindex.png"] == ("skipped", "noindex")
    assert final["/img/agent-none.png"] == ("skipped", "noindex")  # 'fsml_nb-crawler: none' names us
    assert final["/img/otherbot.png"] == ("done", "stored")  # 'otherbot: noindex' does not
    assert stored == {"/nofollow.html", "/img/otherbot.png", "/img/dog.png"}


# --- issue 10: robots.txt redirects ----------------------------------------------------------------
def test_a_robots_txt_redirect_to_another_host_is_followed(tmp_path: Path):
    with FixtureSite(crawl_delay=None) as apex, \
            FixtureSite(crawl_delay=None, robots_redirect=None) as www, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        www.robots_redirect = f"http://localhost:{apex.port}/robots.txt"  # www -> apex: another host name
        Crawler(trap_rules(www.base, start_urls=[f"{www.base}/gallery.html"]), store=store, crawl_id="www").run()
        final = outcomes(store, "www", www.base)
        with store.engine.connect() as connection:
            meta = connection.execute(select(crawl_urls.c.meta).where(crawl_urls.c.url == f"{www.base}/robots.txt")).scalar()
    assert apex.paths() == ["/robots.txt"]
    assert final["/private/hidden.png"] == ("skipped", "robots") and "/private/hidden.png" not in www.paths()
    assert meta["redirected_from"] == [f"{www.base}/robots.txt"]


@pytest.mark.parametrize("hops, hidden", [(5, "skipped"), (6, "done")])
def test_robots_txt_redirects_are_followed_up_to_five(hops: int, hidden: str, tmp_path: Path):
    with FixtureSite(crawl_delay=None, robots_redirect=hops) as site, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        Crawler(trap_rules(site.base, start_urls=[f"{site.base}/gallery.html"]), store=store, crawl_id="hops").run()
        final = outcomes(store, "hops", site.base)
    assert final["/private/hidden.png"][0] == hidden  # after more than five, robots.txt is unavailable: allow all


# --- issue 10: SIGTERM and dead crawlers' leases --------------------------------------------------
def test_sigterm_prints_the_summary_and_leaves_no_lease(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path}/fsml.db"
    env = {key: value for key, value in os.environ.items() if not key.startswith("FSML_")}
    env.update(FSML_HOME=str(tmp_path / "home"), FSML_DB_URL=db_url, FSML_BLOB_URL=str(tmp_path / "blobs"))
    with FixtureSite(traps=False, pages=60, crawl_delay=None, latency=0.05) as site:
        process = subprocess.Popen([str(Path(sys.executable).parent / "fsml"), "collect", "crawl", f"{site.base}/",
                                    "--allow-private-addresses", "--delay", "0", "--max-depth", "10",
                                    "--crawl", "term"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(site.paths()) < 5 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 143, (process.returncode, err[-2000:])
    assert "crawl term: terminated (SIGTERM)" in err and "still queued:" in err
    with Store(db_url, str(tmp_path / "blobs")) as store, store.engine.connect() as connection:
        leased = connection.execute(select(crawl_urls.c.url).where(crawl_urls.c.status == "leased")).all()
    assert leased == [], (leased, err[-3000:])


def test_a_resume_takes_back_a_dead_crawlers_leases_at_once(tmp_path: Path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{socket.gethostname()}:{gone.stdout.strip()}:abc123:0"  # a crawler process killed with SIGKILL
    with FixtureSite(traps=False, pages=3, crawl_delay=None) as site, \
            Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        rules = CrawlConfig([f"{site.base}/"], delay=0.0, lease_seconds=120.0, allow_private_addresses=True)
        assert Frontier(store, rules, "dead").lease(dead_owner).kind == "robots"  # held for 120 s
        started = time.monotonic()
        crawler = Crawler(rules, store=store, crawl_id="dead", workers=2)
        with store.engine.connect() as connection:
            robots = connection.execute(select(crawl_urls.c.status).where(crawl_urls.c.kind == "robots")).scalar()
        assert robots == "queued"  # taken back when the crawl was opened, not after 120 s
        assert crawler.frontier.foreign_leases == []  # nothing to wait for
        summary = crawler.run()
        elapsed = time.monotonic() - started

        elsewhere = "elsewhere.example:1:abc123:0"  # another machine's crawler: only the expiry can tell
        held = Frontier(store, rules, "other").lease(elsewhere)
        assert Frontier(store, rules, "other").foreign_leases == [(elsewhere, held.expires)]
    assert elapsed < 20 and summary.stop_reason == FINISHED and summary.stored == 3
    assert site.paths()[0] == "/robots.txt"


# --- issue 10: errors name the CLI's options ----------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--max-pages", "0"], "fsml: error: --max-pages must be an integer >= 1, not 0"),
    (["--max-depth", "-1"], "fsml: error: --max-depth must be an integer >= 0, not -1"),
    (["--max-per-host", "0"], "fsml: error: --max-per-host must be an integer >= 1, not 0"),
    (["--workers", "0"], "fsml: error: --workers must be a positive integer, not 0"),
    (["--timeout", "0"], "fsml: error: --timeout must be a number >= 0.001, not 0.0"),
    (["--exclude", "(oops"], "fsml: error: --exclude pattern '(oops' is not a valid regular expression"),
    (["--allow", "https://example.com/"], "fsml: error: --allow 'https://example.com/' must be a host name"),
])
def test_cli_errors_name_the_options(args: list[str], message: str, capsys, tmp_path: Path, monkeypatch):
    from fsml_nb.cli import main
    monkeypatch.setenv("FSML_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["collect", "crawl", "https://example.com/", *args])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.splitlines()) == 1 and "_" not in err.split(":")[2].split()[0], err


# --- issue 10: licences --------------------------------------------------------------------------------
def test_licence_claims_are_recognised_kept_raw_per_page_and_conflicts_left_out(tmp_path: Path):
    db_url = f"sqlite:///{tmp_path}/fsml.db"
    with FixtureSite(crawl_delay=None) as site, Store(db_url, str(tmp_path / "blobs")) as store:
        rules = trap_rules(site.base, start_urls=[f"{site.base}/licences/index.html"])
        summary = Crawler(rules, store=store, crawl_id="licences").run()
        items = {item.url.removeprefix(f"{site.base}/licences/"): item for item in crawled_items(store, "licences")}
        claims = {(claim.url.rsplit("/", 1)[1], claim.page_url.rsplit("/", 1)[1]): claim.licence
                  for claim in page_claims(store, "licences")}
        licences = {name: store.get_item(item.item_sha256).licence for name, item in items.items()}
    arr = items["arr.png"]  # rel="license" to an "All rights reserved" page: a declaration, not a licence
    assert (arr.licence, arr.licence_status, arr.licence_raw) == (None, "unknown", f"{site.base}/rights.html")
    assert claims[("arr.png", "arr.html")].status == "unknown"
    conflict = items["conflict.png"]  # CC BY and CC BY-NC on one page
    assert (conflict.licence, conflict.licence_status) == (None, "conflict")
    assert "creativecommons.org/licenses/by/4.0/" in conflict.licence_raw and "CC BY-NC 4.0" in conflict.licence_raw
    assert items["pd.png"].licence == "CC-PDM-1.0" and items["pd.png"].licence_raw.endswith("/publicdomain/mark/1.0/")
    shared = {page: claim.id for (image, page), claim in claims.items() if image == "shared.png" and claim}
    assert shared == {"a.html": "CC-BY-4.0", "b.html": "CC-BY-NC-SA-4.0"}  # every page keeps its own claim
    assert licences == {"arr.png": None, "conflict.png": None, "shared.png": None, "pd.png": "CC-PDM-1.0"}
    assert summary.licensed_items == 1 and summary.licence_conflicts == 2  # one page's conflict, two pages' disagreement

    out = _fsml(db_url, tmp_path, "collect", "version", "licences", "--name", "licensed only")
    assert out.returncode == 0, out.stderr
    assert "1 items" in out.stdout and "left out: conflict 2, unknown 1" in out.stdout, out.stdout
    refused = _fsml(db_url, tmp_path, "collect", "version", "licences", "--name", "x", "--licence", "CC-BY-4.0")
    assert refused.returncode == 1 and refused.stderr.startswith("fsml: error:") and len(refused.stderr.splitlines()) == 1
