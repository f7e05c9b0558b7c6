"""The crawler against a local fixture site, on SQLite and PostgreSQL: every trap ends as the rules say,
provenance and licences are kept, crawls resume without refetching, and two processes share one frontier.

Nothing here contacts anything but 127.0.0.1: the fixture site logs what it answered, and a recording
transport logs every request the crawler's client sent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from itertools import pairwise
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from fsml_nb.collect import (FINISHED, LIMIT_REACHED, CrawlConfig, Crawler, Frontier, crawl_summary, crawled_items)
from fsml_nb.db import crawl_urls
from fsml_nb.store import Entry, LabelSchema, Store

sys.path.insert(0, str(Path(__file__).parent))
from fixture_site import CAP, CAT, FixtureSite  # noqa: E402

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
                 max_response_bytes=CAP, delay=0.0, timeout=0.3, max_attempts=3, backoff=0.01, lease_seconds=5.0)
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
                            max_attempts=3, timeout=1.0)
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
        rules = CrawlConfig([f"{site.base}/"], delay=0.0, timeout=0.2, lease_seconds=0.5)
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
        rules = CrawlConfig([f"{site.base}/"], max_depth=10, max_pages=None, delay=0.0, max_per_host=4, timeout=5)
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
        rules = CrawlConfig([f"{site.base}/"], max_depth=10, delay=config_delay, max_per_host=4)
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
        common = [f"{site.base}/", "--allow", "127.0.0.1", "--delay", "0", "--timeout", "0.2", "--retries", "0",
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
