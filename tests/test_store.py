"""The store on SQLite and on PostgreSQL: items, versions, immutability, atomic imports, errors."""
from __future__ import annotations

import threading
from pathlib import Path

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
