"""Every released schema, upgraded in place, must equal the current table definitions."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fsml_nb.db import SCHEMA_VERSION, metadata, missing_triggers
from fsml_nb.store import Store

SNAPSHOTS = sorted(Path(__file__).parent.glob("schemas/v*.sqlite.sql"), key=lambda path: int(path.name[1:].split(".")[0]))


def test_there_is_a_snapshot_of_the_current_schema():
    assert f"v{SCHEMA_VERSION}.sqlite.sql" in [path.name for path in SNAPSHOTS]


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda path: path.name)
def test_an_old_database_upgrades_in_place(snapshot: Path, tmp_path: Path, caplog):
    database = tmp_path / "old.db"
    with sqlite3.connect(database) as connection:
        connection.executescript(snapshot.read_text())
        connection.execute("INSERT INTO items (sha256, media_type, size, collected_at, meta) "
                           "VALUES (?, 'text/plain', 1, '2026-01-01 00:00:00', '{}')", ("c" * 64,))
    with caplog.at_level(logging.INFO, logger="fsml_nb.db"), Store(f"sqlite:///{database}", str(tmp_path / "blobs")) as store:
        assert store.previous_schema_version == int(snapshot.name[1:].split(".")[0])
        assert store.get_item("c" * 64).size == 1  # the data survived
        with store.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
            absent = missing_triggers(connection)
    assert differences == [], f"upgrading {snapshot.name} does not give the current schema: {differences}"
    assert absent == [], f"triggers missing after the upgrade: {absent}"
    assert "someone removed them" not in caplog.text  # triggers new in a version come with its migration


def schema_sql(database: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(database) as connection:
        return set(connection.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_a_fresh_database_matches_the_current_snapshot(tmp_path: Path):
    "A table changed without a new schema version (and snapshot) fails here."
    Store(f"sqlite:///{tmp_path}/new.db", str(tmp_path / "blobs")).close()
    with sqlite3.connect(tmp_path / "snap.db") as connection:
        connection.executescript((Path(__file__).parent / f"schemas/v{SCHEMA_VERSION}.sqlite.sql").read_text())
    assert schema_sql(tmp_path / "new.db") == schema_sql(tmp_path / "snap.db")
