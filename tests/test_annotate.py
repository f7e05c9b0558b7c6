"""Annotation with real parts: concurrent annotators on SQLite and PostgreSQL, and the Voila page in Chromium."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from conftest import (child_processes, free_port, kernel_processes, launch_chromium, local_server, skip_or_fail,
                      wait_for)

from sqlalchemy import select

from fsml_nb.annotate import (APP_NOTEBOOK_CODE, AccessRefused, AnnotationError, LeaseLostError, NotLeasedError,
                              UnknownAnnotatorError, UnknownProjectError, utc_now)
from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store

PETS = LabelSchema("single_label", ("cat", "dog"))
ROOT = Path(__file__).resolve().parents[1]


def text_version(store: Store, count: int, name: str = "texts"):
    records = [LabelledItem(NewItem(f"{name} item {index}".encode(), "text/plain"), "cat",
                            "test" if index % 5 == 0 else "train") for index in range(count)]
    return store.import_version(records, PETS, name, source="test")


def annotate_until_done(db_url: str, blob_url: str, project: str, name: str, seed: int, ready, start) -> None:
    "One annotator process: label until nothing is left, now and then skipping, or undoing and answering again."
    import random

    chance = random.Random(seed)
    with Store(db_url, blob_url) as own:  # its own engine and connections
        ready.release()
        start.wait(timeout=600)  # all 40 begin together
        work = own.project(project)
        task = work.lease_next(name)
        while task is not None or work.waiting_for_others(name).items:
            if task is None:  # what is left is leased to others; a skip can hand it back (the panel refreshes too)
                time.sleep(0.02)
                task = work.lease_next(name)
                continue
            if chance.random() < 0.05:
                task = work.skip(name, task.item_sha256)
                continue
            label = "cat" if chance.random() < 0.7 else "dog"
            _, task = work.submit_and_next(name, task.item_sha256, label)
            if chance.random() < 0.05:
                again = work.undo_last(name)
                _, task = work.submit_and_next(name, again.item_sha256, again.earlier_label)


def test_forty_annotator_processes_keep_overlap_exact(db_url: str, tmp_path: Path):
    "40 processes at once (not threads): every item ends with exactly `overlap` answers from distinct annotators."
    import multiprocessing

    blob_url = str(tmp_path / "blobs")
    names = [f"annotator{index:02d}" for index in range(40)]
    with Store(db_url, blob_url) as store:
        store.create_project("crowd", text_version(store, 150), overlap=3, lease_seconds=300)
        for name in names:
            store.annotators.add(name, projects=["crowd"])
    context = multiprocessing.get_context("fork")  # the parent's engine is closed: each child opens its own
    ready, start = context.Semaphore(0), context.Event()
    processes = [context.Process(target=annotate_until_done, args=(db_url, blob_url, "crowd", name, seed, ready, start))
                 for seed, name in enumerate(names)]
    for process in processes:
        process.start()
    for _ in processes:
        assert ready.acquire(timeout=600)
    start.set()
    for process in processes:
        process.join(timeout=600)
    assert [process.exitcode for process in processes] == [0] * len(processes)
    with Store(db_url, blob_url) as store:
        crowd = store.project("crowd")
        by_item = crowd.answers_by_item()
        assert len(by_item) == 150
        assert Counter(len(answers) for answers in by_item.values()) == {3: 150}
        assert all(len({annotator for annotator, *_ in answers}) == 3 for answers in by_item.values())
        workers = Counter(annotator for answers in by_item.values() for annotator, *_ in answers)
        # Exactness is the property; the spread over processes depends on the scheduler (SQLite's lock hand-off is
        # not first-come first-served: one run had 9 of 40 processes answering), so it is checked loosely.
        assert len(workers) >= 5 and sum(workers.values()) == 450
        assert crowd.progress(names[0]).complete == 150


def test_only_items_leased_to_the_annotator_can_be_answered(store: Store):
    version = text_version(store, 3)
    picky = store.create_project("picky", version, overlap=2)
    store.annotators.add("pia", projects=["picky"])
    gold_pick = version.entries[2].item_sha256  # never handed out to pia
    with pytest.raises(NotLeasedError, match="not leased to you"):
        picky.submit("pia", gold_pick, "cat")
    task = picky.lease_next("pia")
    with pytest.raises(NotLeasedError, match="not leased to you"):
        picky.submit("pia", gold_pick, "cat")  # holding another item does not open this one
    picky.submit("pia", task.item_sha256, "cat")
    assert list(picky.answers_by_item()) == [task.item_sha256]


def test_unknown_annotator_item_or_project_give_one_clear_line(store: Store):
    version = text_version(store, 2)
    clear = store.create_project("clear", version, overlap=1)
    store.annotators.add("cal", projects=["clear"])
    sha = version.entries[0].item_sha256
    with pytest.raises(UnknownAnnotatorError, match="no annotator 'ghost'"):
        clear.lease_next("ghost")
    with pytest.raises(UnknownAnnotatorError, match="no annotator 'ghost'"):
        clear.submit("ghost", sha, "cat")
    with pytest.raises(AnnotationError, match="not part of project clear"):
        clear.submit("cal", "0" * 64, "cat")
    with pytest.raises(AnnotationError, match="not part of project clear"):
        clear.skip("cal", "0" * 64)
    with pytest.raises(UnknownProjectError, match="no annotation project 'nope'; known: clear"):
        store.project("nope")
    with pytest.raises(AnnotationError, match="guide is empty"):
        clear.set_guide("   ")
    assert clear.answers_by_item() == {}


def test_annotator_management(store: Store):
    one = store.create_project("one", text_version(store, 2, name="one"), overlap=1)
    two = store.create_project("two", text_version(store, 2, name="two"), overlap=1)
    token = store.annotators.add("max", projects=["one"])
    assert store.annotators.for_token(token, "one") == "max"
    with pytest.raises(AccessRefused, match="not a member of project two"):
        store.annotators.for_token(token, "two")
    held = one.lease_next("max")
    store.annotators.add("ned", projects=["one"])
    store.annotators.disable("max")
    with pytest.raises(AccessRefused, match="disabled"):
        store.annotators.for_token(token, "one")
    assert one.lease_next("ned").item_sha256 == held.item_sha256  # max's item went back
    store.annotators.disable("max", disabled=False)
    fresh = store.annotators.reissue_token("max")
    with pytest.raises(AccessRefused):
        store.annotators.for_token(token)
    assert store.annotators.for_token(fresh, "one") == "max"
    one.submit("max", one.lease_next("max").item_sha256, "cat")
    with pytest.raises(AnnotationError, match="disable them instead"):
        store.annotators.remove("max")
    two.add_member("max")
    assert two.members() == ["max"]
    two.remove_member("max")
    with pytest.raises(AccessRefused):
        two.lease_next("max")
    store.annotators.add("once")
    store.annotators.remove("once")
    store.annotators.add("once")  # the name is free again


def test_a_v3_database_moves_its_leases_and_answers_into_slots(tmp_path: Path):
    "The v4 step: k slots per item, answered ones done, live leases kept with their owner, members for all."
    import sqlite3

    from fsml_nb.db import DONE, LEASED, QUEUED, annotation_members, annotation_offers, annotation_slots

    database = tmp_path / "old.db"
    a, b = "a" * 64, "b" * 64
    soon = (utc_now() + timedelta(seconds=100)).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(database) as connection:
        connection.executescript((ROOT / "tests/schemas/v3.sqlite.sql").read_text())  # the last released schema
        for sha in (a, b):
            connection.execute("INSERT INTO items (sha256, media_type, size, collected_at, meta) "
                               "VALUES (?, 'text/plain', 1, '2026-01-01 00:00:00', '{}')", (sha,))
        connection.execute("INSERT INTO annotation_projects VALUES ('old', '{\"kind\": \"single_label\", "
                           "\"classes\": [\"cat\", \"dog\"]}', 2, 600, NULL, '2026-01-01 00:00:00')")
        connection.execute("INSERT INTO annotation_guides VALUES ('old', 1, '# g', '2026-01-01 00:00:00')")
        connection.execute("INSERT INTO annotation_tasks VALUES ('old', ?, 0, 'train', NULL, 1)", (a,))
        connection.execute("INSERT INTO annotation_tasks VALUES ('old', ?, 1, 'train', NULL, 0)", (b,))
        for name in ("ann", "bob"):
            connection.execute("INSERT INTO annotators VALUES (?, ?, '2026-01-01 00:00:00')", (name, name * 30))
        connection.execute("INSERT INTO annotation_answers (project, item_sha256, annotator, label, guide_version, "
                           "unsure, created_at) VALUES ('old', ?, 'ann', '\"cat\"', 1, 0, '2026-01-01 00:00:00')", (a,))
        connection.execute("INSERT INTO annotation_leases VALUES ('old', ?, 'bob', ?)", (a, soon))
    with Store(f"sqlite:///{database}", str(tmp_path / "blobs")) as store:
        with store.engine.connect() as connection:
            slots = connection.execute(select(annotation_slots.c.item_sha256, annotation_slots.c.status,
                                              annotation_slots.c.lease_owner)
                                       .order_by(annotation_slots.c.position, annotation_slots.c.status)).all()
            members_rows = connection.execute(select(annotation_members.c.annotator)).scalars().all()
            offered = connection.execute(select(annotation_offers.c.annotator)).scalars().all()
        assert [tuple(row) for row in slots] == [(a, DONE, None), (a, LEASED, "bob"), (b, QUEUED, None),
                                                 (b, QUEUED, None)]
        assert sorted(members_rows) == ["ann", "bob"] and sorted(offered) == ["ann", "bob"]
        old = store.project("old")
        assert old.lease_next("bob").item_sha256 == a  # bob's lease survived the upgrade
        old.submit("bob", a, "dog")
        assert len(old.answers_by_item()[a]) == 2
        with pytest.raises(NotLeasedError):
            old.submit("ann", b, "cat")


def test_leases_expire_and_late_answers_never_exceed_overlap(store: Store):
    version = text_version(store, 2)
    solo = store.create_project("solo", version, overlap=1, lease_seconds=30)
    for name in ("ann", "bob"):
        store.annotators.add(name, projects=["solo"])
    start = utc_now()
    abandoned = solo.lease_next("ann", now=start)
    assert solo.lease_next("bob", now=start).item_sha256 != abandoned.item_sha256
    later = start + timedelta(seconds=31)
    assert solo.lease_next("bob", now=later).item_sha256 == abandoned.item_sha256
    solo.submit("bob", abandoned.item_sha256, "dog", now=later)
    with pytest.raises(LeaseLostError, match="your lease on item .* expired"):
        solo.submit("ann", abandoned.item_sha256, "cat", now=later)
    assert len(solo.answers_by_item()[abandoned.item_sha256]) == 1


def test_resubmitting_is_idempotent_and_changes_need_undo(store: Store):
    twice = store.create_project("twice", text_version(store, 3), overlap=2)
    store.annotators.add("cy", projects=["twice"])
    task = twice.lease_next("cy")
    first = twice.submit("cy", task.item_sha256, "cat")
    assert twice.submit("cy", task.item_sha256, "cat") == first
    with pytest.raises(AnnotationError, match="undo first"):
        twice.submit("cy", task.item_sha256, "dog")
    with pytest.raises(AnnotationError, match="does not fit"):
        twice.submit("cy", task.item_sha256, "horse")
    assert len(twice.answers_by_item()[task.item_sha256]) == 1


def test_tokens(store: Store):
    token = store.annotators.add("dee")
    assert store.annotators.for_token(token) == "dee"
    for wrong in ("", None, token[:-1] + ("A" if token[-1] != "A" else "B")):
        with pytest.raises(AccessRefused):
            store.annotators.for_token(wrong)
    with pytest.raises(AnnotationError, match="exists already"):
        store.annotators.add("dee")


def test_consensus_export_names_the_guide(store: Store):
    vote = store.create_project("vote", text_version(store, 4), overlap=1, guide="# v1")
    store.annotators.add("eve", projects=["vote"])
    task = vote.lease_next("eve")
    while task is not None:
        _, task = vote.submit_and_next("eve", task.item_sha256, "dog")
    version = vote.export_consensus()
    assert version.guide_version == "vote@v1" and {entry.label for entry in version.entries} == {"dog"}
    assert version.split_counts() == {"test": 1, "train": 3}
    named = vote.export_consensus(name="vote-final")  # identical content: the name is still given
    assert named.name == "vote-final" and store.version("vote-final").id == version.id


def test_the_committed_app_notebook_is_what_serve_writes():
    notebook = nbformat.read(ROOT / "nbs" / "apps" / "annotate.ipynb", as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert code == [APP_NOTEBOOK_CODE]


# --- the Voila page in a real browser --------------------------------------------------

@contextmanager
def voila_server(tmp_path: Path, *serve_options: str) -> Iterator[tuple[str, str, Path, subprocess.Popen]]:
    "`fsml annotate serve` on a project of 5 texts; yields its URL, fay's token, FSML_HOME and the server process."
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FSML_")}, "FSML_HOME": str(tmp_path / "home")}
    with Store(f"sqlite:///{tmp_path}/home/fsml.db", str(tmp_path / "home/blobs")) as store:
        version = store.import_version(
            [LabelledItem(NewItem(f"browser item {index}".encode(), "text/plain"), "cat", "train") for index in range(5)],
            PETS, "browser", source="test")
        store.create_project("web", version, overlap=1)
        token = store.annotators.add("fay", projects=["web"])
    port = free_port()
    fsml = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"
    with local_server([fsml, "annotate", "serve", "--project", "web", "--port", str(port), *serve_options], port,
                      env) as server:
        yield f"http://127.0.0.1:{port}", token, tmp_path / "home", server


@pytest.fixture
def voila_app(tmp_path: Path):
    with voila_server(tmp_path) as (url, token, home, _):
        yield url, token, home


def test_an_annotator_labels_in_the_browser(chromium_path: str, voila_app):
    "Hotkeys from page load without pointing at the panel; the question box takes every key; undo shows the label."
    from playwright.sync_api import sync_playwright

    url, token, home = voila_app
    store = Store(f"sqlite:///{home}/fsml.db", str(home / "blobs"))
    web = store.project("web")

    def answers() -> dict:
        return web.answers_by_item()

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path)
        page = browser.new_page()
        page.goto(f"{url}/?token={token}", timeout=90_000)  # a Voila page's first load can take over 30 s on 2 busy cores
        page.wait_for_selector(".fsml-annotation-panel .fsml-item-id", timeout=90_000)
        page.mouse.move(0, 0)  # the pointer is nowhere near the panel
        first = page.get_attribute(".fsml-item-id", "data-item")
        page.keyboard.press("2")  # class 2 of (cat, dog)
        page.keyboard.press("Enter")
        wait_for(lambda: first in answers())
        assert answers()[first][0][:2] == ("fay", "dog")
        wait_for(lambda: page.get_attribute(".fsml-item-id", "data-item") != first)  # the next item appears
        page.keyboard.press("Backspace")
        wait_for(lambda: first not in answers())  # undone in the database
        wait_for(lambda: page.get_attribute(".fsml-item-id", "data-item") == first)  # and back on screen
        wait_for(lambda: "dog" in (page.text_content(".widget-toggle-button.mod-active") or ""),
                 what="the earlier label after the undo")
        page.keyboard.press("u")  # the unsure hotkey
        wait_for(lambda: page.is_checked(".fsml-annotation-panel input[type=checkbox]"), what="unsure ticked")
        question = "Is it 2 cats, sure? s u"
        page.click(".fsml-question input")
        page.keyboard.type(question)  # digits, s and u go into the box, not to the hotkeys
        page.keyboard.press("Enter")  # at once: Enter in the question box submits, carrying the box's text
        wait_for(lambda: first in answers())
        assert answers()[first][0][:3] == ("fay", "dog", True)
        assert [q.question for q in web.open_questions()] == [question]
        wait_for(lambda: page.get_attribute(".fsml-item-id", "data-item") != first)
        time.sleep(1.0)  # the box's own late syncs of the question have arrived by now ...
        assert page.input_value(".fsml-question input") == ""  # ... and did not bring it back for the next item
        second = page.get_attribute(".fsml-item-id", "data-item")
        page.click(".widget-toggle-button:has-text('cat')")  # a mouse click leaves the button focused
        page.keyboard.press("Enter")  # ... and Enter submits once, with no "choose a label first"
        wait_for(lambda: second in answers())
        wait_for(lambda: page.get_attribute(".fsml-item-id", "data-item") not in (first, second))
        time.sleep(1.0)  # a second, spurious submit would show its message by now
        assert "choose a label first" not in page.inner_text(".fsml-annotation-panel")
        assert len(answers()) == 2
        page.goto(f"{url}/?token=not-a-token")
        page.wait_for_selector(".fsml-refused", timeout=90_000)
        assert "Access refused" in page.inner_text(".fsml-refused")
        assert page.query_selector(".fsml-annotation-panel") is None  # nobody's queue
        browser.close()
    store.close()


def test_kernels_of_closed_pages_end_and_their_number_is_capped(chromium_path: str, tmp_path: Path):
    "N page loads and closes: the kernel count goes back to its floor; beyond --max-kernels a page is refused."
    from playwright.sync_api import sync_playwright

    if not Path("/proc/self/status").exists():
        skip_or_fail("counting kernel processes needs /proc (Linux)")
    with voila_server(tmp_path, "--cull-after", "3", "--max-kernels", "2") as (url, token, _, server):
        # `fsml annotate serve` runs Voila as its child, and Voila the kernels
        wait_for(lambda: any(b"voila" in (Path(f"/proc/{child}/cmdline").read_bytes())
                             for child in child_processes(server.pid)), what="voila to start")
        voila_pid = next(child for child in child_processes(server.pid)
                         if b"voila" in Path(f"/proc/{child}/cmdline").read_bytes())
        floor = 1  # the preheated kernel waiting for a visitor (--preheat 1, the default), once started
        wait_for(lambda: len(kernel_processes(voila_pid)) == floor, timeout=120, what="the preheated kernel")
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright, chromium_path)
            pages = []
            for _ in range(2):
                page = browser.new_page()
                page.goto(f"{url}/?token={token}", timeout=90_000)  # a Voila page's first load can take over 30 s on 2 busy cores
                page.wait_for_selector(".fsml-annotation-panel", timeout=120_000)
                pages.append(page)
            wait_for(lambda: len(kernel_processes(voila_pid)) == floor + 2, timeout=120,  # the pool refills
                     what="two page kernels and the refilled pool")
            refused = browser.new_page()
            response = refused.goto(f"{url}/?token={token}")
            assert response.status == 503  # the cap: a third page at once is turned away
            for page in [*pages, refused]:
                page.close()
            browser.close()
        wait_for(lambda: len(kernel_processes(voila_pid)) == floor, timeout=90, what="the kernels to be culled")


def test_an_item_whose_blob_is_missing_is_skipped_not_fatal(store: Store):
    from fsml_nb.annotate import AnnotationPanel

    version = text_version(store, 3, name="gaps")
    gaps = store.create_project("gaps", version, overlap=1)
    store.annotators.add("gus", projects=["gaps"])
    first = gaps.lease_next("gus")
    Path(store.blobs.path(first.item_sha256)).unlink()
    panel = AnnotationPanel(gaps, "gus")
    assert panel.task is not None and panel.task.item_sha256 != first.item_sha256
    assert "was skipped" in panel.status.value and "missing" in panel.status.value


@pytest.fixture
def jupyterlab_notebook(tmp_path: Path):
    "A JupyterLab server on 127.0.0.1 with a notebook that shows an annotation panel."
    home = tmp_path / "home"
    code = (f"import os\nos.environ['FSML_HOME'] = {str(home)!r}\n"
            "from fsml_nb.store import Store\nfrom fsml_nb.annotate import AnnotationPanel\n"
            "panel = AnnotationPanel(Store().project('lab'), 'lou')\npanel.widget")
    with Store(f"sqlite:///{home}/fsml.db", str(home / "blobs")) as store:
        version = store.import_version([LabelledItem(NewItem(f"lab item {index}".encode(), "text/plain"), "cat", "train")
                                        for index in range(4)], PETS, "lab", source="test")
        store.create_project("lab", version, overlap=1)
        store.annotators.add("lou", projects=["lab"])
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(tmp_path / "panel.ipynb"))
    port = free_port()
    command = [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", f"--port={port}",
               "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.root_dir={tmp_path}"]
    with local_server(command, port):
        yield f"http://127.0.0.1:{port}/lab/tree/panel.ipynb", home


def test_the_panel_works_in_jupyterlab(chromium_path: str, jupyterlab_notebook):
    from playwright.sync_api import sync_playwright

    url, home = jupyterlab_notebook
    store = Store(f"sqlite:///{home}/fsml.db", str(home / "blobs"))
    lab = store.project("lab")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url, timeout=90_000)  # a Voila page's first load can take over 30 s on 2 busy cores
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-StatusBar-TextItem:has-text('Idle')", timeout=120_000)  # the kernel is ready
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")  # JupyterLab's own command, not a keystroke race
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        page.wait_for_selector(".fsml-annotation-panel", timeout=120_000)
        first = page.get_attribute(".fsml-item-id", "data-item")
        page.hover(".fsml-annotation-panel .fsml-item-text")
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        deadline = time.monotonic() + 60
        while first not in lab.answers_by_item():
            assert time.monotonic() < deadline, "the answer never reached the database"
            time.sleep(0.2)
        assert lab.answers_by_item()[first][0][:2] == ("lou", "dog")
        page.keyboard.press("Backspace")
        deadline = time.monotonic() + 60
        while first in lab.answers_by_item():
            assert time.monotonic() < deadline, "Backspace did not undo"
            time.sleep(0.2)
        browser.close()
    store.close()
