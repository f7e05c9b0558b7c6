"""The store on SQLite and on PostgreSQL: items, versions, immutability, atomic imports, errors."""
from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fsml_nb.db import SCHEMA_VERSION, DatabaseUnavailableError, SchemaTooNewError, make_engine, schema_info
from fsml_nb.store import (Entry, InvalidVersionError, LabelledItem, LabelSchema, NewItem, Store, UnknownVersionError,
                           manifest_id)

PETS = LabelSchema("single_label", ("cat", "dog"))


def blob_files(store: Store) -> set[str]:
    return {path.name for path in Path(store.blobs.root).rglob("*") if path.is_file()}


def labelled(count: int, prefix: str = "item", label: str = "cat", split: str = "train") -> list[LabelledItem]:
    return [LabelledItem(NewItem(f"{prefix}-{index}".encode(), "text/plain"), label, split) for index in range(count)]


def test_items_are_content_addressed(store: Store):
    first = store.add_items([NewItem(b"abc", "text/plain", source_url="https://a.example/x", licence="CC0-1.0")])
    again = store.add_items([NewItem(b"abc", "text/plain", source_url="https://b.example/y")])
    assert first == again and store.item_count() == 1
    item = store.get_item(first[0])
    assert (item.size, item.licence, item.source_url) == (3, "CC0-1.0", "https://a.example/x")
    assert item.collected_at.tzinfo is not None


def test_version_id_is_the_content_hash(store: Store):
    version = store.import_version(labelled(3), PETS, "pets", source="test")
    assert version.id == manifest_id(version.entries, PETS, None)
    assert store.import_version(labelled(3), PETS, "renamed", source="test").id == version.id
    moved = [LabelledItem(record.item, record.label, "test") for record in labelled(3)]
    assert store.import_version(moved, PETS, "pets", source="test").id != version.id
    with_guide = store.import_version(labelled(3), PETS, "pets", source="test", guide_version="guide-v2")
    assert with_guide.id != version.id and with_guide.guide_version == "guide-v2"
    assert store.version(version.id[:8]) == version
    assert store.version("pets") == with_guide  # a name means its newest version
    assert [summary.id for summary in store.versions()][0] == with_guide.id


def test_diff_reports_every_kind_of_change(store: Store):
    old = store.import_version(labelled(4), PETS, "pets", source="test")
    records = labelled(4)
    new_records = ([LabelledItem(records[0].item, "dog", "train"), LabelledItem(records[1].item, "cat", "test"),
                    records[2]] + labelled(2, prefix="new"))
    new = store.import_version(new_records, PETS, "pets", source="test")
    changes = store.diff(old.id, new.id)
    assert changes.summary() == {"added": 2, "removed": 1, "relabelled": 1, "moved": 1}
    assert changes.relabelled[0].before == "cat" and changes.relabelled[0].after == "dog"
    assert store.diff(old, old).is_empty


@pytest.mark.parametrize("statement", [
    "UPDATE dataset_versions SET name = 'x'",
    "DELETE FROM dataset_versions",
    "UPDATE version_entries SET split = 'test'",
    "DELETE FROM version_entries",
])
def test_versions_are_immutable_in_sql(store: Store, statement: str):
    version = store.import_version(labelled(2), PETS, "pets", source="test")
    with store.engine.connect() as connection:
        with pytest.raises(DBAPIError, match="immutable"):
            connection.execute(text(statement))
    assert store.version(version.id) == version
    assert store.verify_version(version).ok


def test_a_failed_import_leaves_nothing_behind(store: Store):
    store.import_version(labelled(2), PETS, "pets", source="test")
    before = (store.item_count(), len(store.versions()), blob_files(store))
    with pytest.raises(InvalidVersionError, match="does not fit"):
        store.import_version(labelled(3, prefix="x") + labelled(1, prefix="y", label="bird"), PETS, "bad", "test")
    # an empty split name is only caught after the blobs and rows were written: they must be undone
    with pytest.raises(InvalidVersionError, match="no split name"):
        store.import_version(labelled(3, prefix="z", split=""), PETS, "bad", source="test")
    with pytest.raises(InvalidVersionError, match="appears twice"):
        store.import_version(labelled(1, prefix="w") * 2, PETS, "bad", source="test")
    assert (store.item_count(), len(store.versions()), blob_files(store)) == before


def test_bad_version_references(store: Store):
    store.import_version(labelled(2), PETS, "pets", source="test")
    for ref in ("nope", "0000", "f" * 64):
        with pytest.raises(UnknownVersionError, match="no dataset version"):
            store.version(ref)
    with pytest.raises(InvalidVersionError, match="not in the store"):
        store.create_version([Entry("a" * 64, "cat", "train")], PETS, "ghost")


def test_concurrent_imports_of_the_same_data_make_one_version(db_url: str, tmp_path: Path):
    results, errors = [], []

    def worker():
        try:
            with Store(db_url, str(tmp_path / "blobs")) as own_store:  # one connection pool per worker
                results.append(own_store.import_version(labelled(200), PETS, "pets", source="test").id)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    with Store(db_url, str(tmp_path / "blobs")) as check:
        assert len(check.versions()) == 1 and check.item_count() == 200
        assert check.verify_version(results[0]).ok


def test_a_database_from_a_newer_fsml_is_refused_untouched(db_url: str, tmp_path: Path):
    with Store(db_url, str(tmp_path / "blobs")) as store:
        version = store.import_version(labelled(2), PETS, "pets", source="test")
        with store.engine.begin() as connection:
            connection.execute(schema_info.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(SchemaTooNewError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(db_url, str(tmp_path / "blobs"))
    with _raw(db_url) as connection:
        assert connection.execute(text("SELECT count(*) FROM version_entries")).scalar() == 2
        assert connection.execute(text("SELECT id FROM dataset_versions")).scalar() == version.id


def _raw(db_url: str):
    return make_engine(db_url).connect()


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/none", "sqlite:////proc/no/such/dir/x.db",
                                 "oracle://x@y/z", "not a url"])
def test_unusable_database_urls_are_one_clear_error(url: str, tmp_path: Path):
    with pytest.raises(DatabaseUnavailableError) as caught:
        Store(url, str(tmp_path / "blobs"))
    message = str(caught.value)
    assert "\n" not in message
    assert any(words in message for words in ("cannot reach", "unsupported", "not a database URL", "cannot create"))


# --- issue 9 §3: store defects, each with a test that failed before its fix -------------------------------------

def _child(work, *args) -> None:
    "Run `work(*args)` in a child process; put ('ok', result) or ('error', 'Type: message') on the queue, args[-1]."
    results = args[-1]
    try:
        results.put((work.__name__, "ok", work(*args[:-1])))
    except BaseException as error:  # a KeyboardInterrupt too: the parent asserts on what happened
        results.put((work.__name__, "error", f"{type(error).__name__}: {error}"))


def _pause_after_puts(store: Store, count: int, pause: Callable[[], None]) -> None:
    "Make `store.blobs.put` call `pause()` right after its `count`-th blob write."
    put, calls = store.blobs.put, [0]

    def put_then_pause(data: bytes):
        result = put(data)
        calls[0] += 1
        if calls[0] == count:
            pause()
        return result
    store.blobs.put = put_then_pause


def _import_pets(db_url: str, blob_url: str, records: list[LabelledItem], name: str,
                 pause: Callable[[], None] | None = None) -> str:
    with Store(db_url, blob_url) as own_store:
        if pause is not None:
            _pause_after_puts(own_store, len(records), pause)
        return own_store.import_version(records, PETS, name, source="test").id


def _overlapping_import(db_url, blob_url, reverse, split, barrier) -> str:
    records = labelled(ITEMS, prefix="file", split=split)
    return _import_pets(db_url, blob_url, records[::-1] if reverse else records, f"pets-{split}",
                        pause=lambda: barrier.wait(timeout=60))  # both insert their rows at the same moment


def _forward_import(db_url, blob_url, barrier) -> str:
    return _overlapping_import(db_url, blob_url, False, "train", barrier)


def _backward_import(db_url, blob_url, barrier) -> str:
    return _overlapping_import(db_url, blob_url, True, "test", barrier)


ITEMS = 2000
_fork = multiprocessing.get_context("fork")


def _run_children(*targets: tuple) -> list[tuple[str, Any]]:
    results = _fork.Queue()
    processes = [_fork.Process(target=_child, args=(*target, results)) for target in targets]
    for process in processes:
        process.start()
    outcomes = dict((name, (status, value)) for name, status, value in (results.get(timeout=120) for _ in processes))
    for process in processes:
        process.join(timeout=30)
    return [outcomes[work.__name__] for work, *_ in targets]


def _broken_versions(db_url: str, blob_url: str) -> list[str]:
    "Each committed version with a missing or corrupt blob, and what is wrong (empty when all are whole)."
    with Store(db_url, blob_url) as check:
        reports = [(summary.name, check.verify_version(summary.id)) for summary in check.versions()]
    assert reports, "no version was committed"
    return [f"{name}: {len(report.missing)} missing, {len(report.corrupt)} corrupt blobs"
            for name, report in reports if not report.ok]


def test_overlapping_imports_in_opposite_order_do_not_deadlock(postgres_url: str, tmp_path: Path):
    "3.2: two processes insert the same 2,000 items in opposite order at the same moment."
    blob_url = str(tmp_path / "blobs")
    barrier = _fork.Barrier(2)
    outcomes = _run_children((_forward_import, postgres_url, blob_url, barrier),
                             (_backward_import, postgres_url, blob_url, barrier))
    assert ([status for status, _ in outcomes], _broken_versions(postgres_url, blob_url)) == (["ok", "ok"], []), outcomes


def _interrupted_import(db_url, blob_url, written, committed) -> str:
    "Write every blob of the folder, wait until another import of it committed, then get Ctrl-C."
    def interrupt():
        written.set()
        committed.wait(timeout=60)
        raise KeyboardInterrupt
    return _import_pets(db_url, blob_url, labelled(ITEMS, prefix="file"), "interrupted", pause=interrupt)


def _committing_import(db_url, blob_url, written, committed) -> str:
    assert written.wait(timeout=60), "the other import never wrote its blobs"
    try:
        return _import_pets(db_url, blob_url, labelled(ITEMS, prefix="file")[::-1], "committed")
    finally:
        committed.set()


def test_an_interrupted_import_keeps_the_blobs_another_import_committed(db_url: str, tmp_path: Path):
    "3.2: import B wrote the folder's blobs, import A of the same folder committed, then B got Ctrl-C."
    blob_url = str(tmp_path / "blobs")
    written, committed = _fork.Event(), _fork.Event()
    interrupted, done = _run_children((_interrupted_import, db_url, blob_url, written, committed),
                                      (_committing_import, db_url, blob_url, written, committed))
    assert interrupted[0] == "error" and interrupted[1].startswith("KeyboardInterrupt"), interrupted
    assert done[0] == "ok", done
    assert _broken_versions(db_url, blob_url) == []


def _slow_import(db_url, blob_url, writing, release) -> str:
    "An import that pauses in its blob-writing phase until `release` is set."
    def pause():
        writing.set()
        release.wait(timeout=60)
    records = labelled(300, prefix="slow")
    with Store(db_url, blob_url) as own_store:
        _pause_after_puts(own_store, 100, pause)
        return own_store.import_version(records, PETS, "slow", source="test").id


def _open_and_list(db_url, blob_url) -> tuple[float, list[str]]:
    started = time.monotonic()
    with Store(db_url, blob_url) as reader:
        names = [summary.name for summary in reader.versions()]
    return time.monotonic() - started, names


def test_readers_do_not_wait_for_an_import_on_sqlite(tmp_path: Path):
    "3.3: while an import writes blobs, another process opens the store and lists versions at once."
    db_url, blob_url = f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")
    with Store(db_url, blob_url) as store:
        store.import_version(labelled(3), PETS, "pets", source="test")
    writing, release = _fork.Event(), _fork.Event()
    results = _fork.Queue()
    importer = _fork.Process(target=_child, args=(_slow_import, db_url, blob_url, writing, release, results))
    reader = _fork.Process(target=_child, args=(_open_and_list, db_url, blob_url, results))
    importer.start()
    try:
        assert writing.wait(timeout=60), "the import never started writing blobs"
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive(), "Store() or versions() waited for the import's write lock"
        _, status, answer = results.get(timeout=5)
        assert status == "ok", answer
        seconds, names = answer
        assert names == ["pets"] and seconds < 1.0, answer
    finally:
        release.set()
        if reader.is_alive():
            reader.terminate()
    _, status, version_id = results.get(timeout=60)
    importer.join(timeout=30)
    assert status == "ok", version_id
    with Store(db_url, blob_url) as store:
        assert {summary.name for summary in store.versions()} == {"pets", "slow"}


def _execute(store: Store, *statements: str) -> None:
    with store.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def _drop_entry_triggers(store: Store) -> list[str]:
    "Drop every trigger on version_entries, the way someone with database access could."
    with store.engine.begin() as connection:
        if store.dialect == "postgresql":
            names = list(connection.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND "
                                                 "tgrelid = 'version_entries'::regclass")).scalars())
            for name in names:
                connection.execute(text(f"DROP TRIGGER {name} ON version_entries"))
        else:
            names = list(connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                                 "AND tbl_name = 'version_entries'")).scalars())
            for name in names:
                connection.execute(text(f"DROP TRIGGER {name}"))
    assert names
    return names


def test_inserting_into_a_sealed_version_is_refused(store: Store):
    "3.4: a version's entries cannot grow after it was created."
    version = store.import_version(labelled(2), PETS, "pets", source="test")
    extra = store.add_items([NewItem(b"extra", "text/plain")])[0]
    with pytest.raises(DBAPIError, match="immutable"):
        _execute(store, f"INSERT INTO version_entries (version_id, item_sha256, label, split) "
                        f"VALUES ('{version.id}', '{extra}', '\"cat\"', 'train')")
    assert store.version(version.id) == version and len(store.version(version.id).entries) == 2


@pytest.mark.parametrize("statements", [
    ("TRUNCATE version_entries",),
    ("SET LOCAL session_replication_role = replica", "UPDATE version_entries SET split = 'test'"),
    ("SET LOCAL session_replication_role = replica", "DELETE FROM version_entries"),
    ("SET LOCAL session_replication_role = replica", "UPDATE dataset_versions SET item_count = 1"),
])
def test_postgres_backdoors_cannot_change_a_version(postgres_url: str, tmp_path: Path, statements):
    "3.4: TRUNCATE and replica mode (which skips ordinary triggers) are refused too."
    with Store(postgres_url, str(tmp_path / "blobs")) as store:
        version = store.import_version(labelled(3), PETS, "pets", source="test")
        with pytest.raises(DBAPIError, match="immutable"):
            _execute(store, *statements)
        assert store.version(version.id) == version


def test_a_dropped_trigger_is_restored_on_reopen(db_url: str, tmp_path: Path):
    "3.4: opening the store puts back the immutability triggers someone removed."
    blob_url = str(tmp_path / "blobs")
    with Store(db_url, blob_url) as store:
        version = store.import_version(labelled(3), PETS, "pets", source="test")
        _drop_entry_triggers(store)
    with Store(db_url, blob_url) as store:
        for statement in ("UPDATE version_entries SET split = 'test'", "DELETE FROM version_entries"):
            with pytest.raises(DBAPIError, match="immutable"):
                _execute(store, statement)
        assert store.version(version.id) == version


def test_disabled_postgres_triggers_are_enabled_again_on_reopen(postgres_url: str, tmp_path: Path):
    "3.4: ALTER TABLE ... DISABLE TRIGGER is undone when the store opens, like a dropped trigger."
    blob_url = str(tmp_path / "blobs")
    with Store(postgres_url, blob_url) as store:
        version = store.import_version(labelled(3), PETS, "pets", source="test")
        _execute(store, "ALTER TABLE version_entries DISABLE TRIGGER USER",
                 "ALTER TABLE dataset_versions DISABLE TRIGGER USER")
    with Store(postgres_url, blob_url) as store:
        for statement in ("UPDATE version_entries SET split = 'test'", "UPDATE dataset_versions SET name = 'x'"):
            with pytest.raises(DBAPIError, match="immutable"):
                _execute(store, statement)
        assert store.version(version.id) == version


@pytest.mark.parametrize("change", [
    "UPDATE version_entries SET label = '\"dog\"' WHERE item_sha256 = '{sha}'",
    "UPDATE version_entries SET split = 'test' WHERE item_sha256 = '{sha}'",
    "DELETE FROM version_entries WHERE item_sha256 = '{sha}'",
    "INSERT INTO version_entries (version_id, item_sha256, label, split) VALUES ('{id}', '{extra}', '\"cat\"', 'x')",
])
def test_a_version_changed_behind_the_triggers_is_refused_on_load(db_url: str, tmp_path: Path, change: str):
    "3.4: store.version() and data.load() re-hash the rows they read, before and after a reopen."
    from fsml_nb.data import load
    from fsml_nb.store import CorruptVersionError

    blob_url = str(tmp_path / "blobs")
    with Store(db_url, blob_url) as store:
        version = store.import_version(labelled(3), PETS, "pets", source="test")
        extra = store.add_items([NewItem(b"extra", "text/plain")])[0]
        _drop_entry_triggers(store)
        _execute(store, change.format(sha=version.entries[0].item_sha256, id=version.id, extra=extra))
        for attempt in (lambda: store.version(version.id), lambda: store.version("pets"),
                        lambda: load(version.id, store=store, check_blobs=False)):
            with pytest.raises(CorruptVersionError, match="changed behind"):
                attempt()
    with Store(db_url, blob_url) as store:
        with pytest.raises(CorruptVersionError, match=version.id[:12]):
            load(version.id, store=store)
        assert not store.verify_version(version.id).ok


def _truncated_database(path: Path) -> None:
    with Store(f"sqlite:///{path}", str(path.parent / "blobs")) as store:
        store.import_version(labelled(300, prefix="big"), PETS, "pets", source="test")
    whole = path.read_bytes()
    assert len(whole) > 8 * 4096
    path.write_bytes(whole[:len(whole) // 2])


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_sqlite_file_is_one_clear_error_and_left_untouched(tmp_path: Path, damage: str):
    "3.5: a 0-byte, garbage or truncated file is never opened as (or turned into) a new store."
    from fsml_nb.db import DatabaseDamagedError

    path = tmp_path / "fsml.db"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"these are not the bytes of a SQLite database\n" * 100)
    else:
        _truncated_database(path)
    before = path.read_bytes()
    with pytest.raises(DatabaseDamagedError) as caught:
        Store(f"sqlite:///{path}", str(tmp_path / "blobs"))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert path.read_bytes() == before


def test_reimporting_repairs_a_corrupt_blob(store: Store):
    "3.8: putting the right bytes again replaces a blob whose hash no longer matches."
    records = labelled(5)
    version = store.import_version(records, PETS, "pets", source="test")
    damaged = version.entries[0].item_sha256
    Path(store.blobs.path(damaged)).write_bytes(b"bit rot")
    assert store.verify_version(version).corrupt == (damaged,)
    assert store.import_version(records, PETS, "pets", source="test").id == version.id
    assert store.verify_version(version).ok
    assert store.blobs.put(store.blobs.get(damaged)) == (damaged, False)  # an intact blob is left alone


def test_collect_garbage_never_removes_a_blob_a_version_names(store: Store):
    "3.8: gc lists orphans and interrupted writes (dry run), removes them with dry_run=False, keeps the rest."
    version = store.import_version(labelled(5), PETS, "pets", source="test")
    orphan, _ = store.blobs.put(b"no row names me")
    temporary = Path(store.blobs.path(orphan) + ".tmp-0123abcd")
    temporary.write_bytes(b"half a blob")
    assert store.collect_garbage().orphans == ()  # too young for the default minimum age
    listed = store.collect_garbage(min_age_seconds=0)
    assert (listed.orphans, listed.temporary_files, listed.removed) == ((orphan,), (str(temporary),), False)
    assert store.blobs.exists(orphan) and temporary.exists()
    removed = store.collect_garbage(dry_run=False, min_age_seconds=0)
    assert removed.orphans == (orphan,) and removed.removed
    assert not store.blobs.exists(orphan) and not temporary.exists()
    assert store.verify_version(version).ok and len(blob_files(store)) == 5
