"""The model registry on SQLite and PostgreSQL: register, promote, roll back, pull, lineage,
concurrent promotions, and every bad input leaving nothing half-registered."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from fsml_nb.core import utc_now
from fsml_nb.data import import_mnist1d
from fsml_nb.db import (missing_triggers, model_version_files, model_versions, reading, registered_models,
                        registry_events)
from fsml_nb.export import export_checkpoint
from fsml_nb.registry import (DamagedExportError, GateFailedError, ModelRegistry, NoPromotionYetError,
                              NotAnExportError, RegistryError, TamperedArchiveError, UnknownAliasError,
                              UnknownModelVersionError, WrongModelError, load_pulled, run_onnx)
from fsml_nb.store import Store
import fsml_nb.repro  # noqa: F401  (registers the MNIST-1D architectures)
from fsml_nb.train import TrainConfig, fit, registered_spec

SAMPLES = 400  # a small MNIST-1D: 320 train, 80 test
MLP = registered_spec("mnist1d-mlp")  # fsml_nb.repro registers the MNIST-1D architectures


def small_mnist1d(store: Store):
    return import_mnist1d(store, name="mnist1d-small", num_samples=SAMPLES)


def consensus_version(store: Store):
    "An annotation project over the small MNIST-1D, labelled by one annotator, exported (deterministic)."
    base = small_mnist1d(store)
    relabel = store.create_project("relabel", base, overlap=1, guide="# Guide v1\n\nLabel the digit.")
    relabel.set_guide("# Guide v2\n\nLabel the digit; 0 and 6 look alike.")
    store.annotators.add("ana", projects=["relabel"])
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    labels = {entry.item_sha256: entry.label for entry in base.entries}
    while (task := relabel.lease_next("ana", now=at)) is not None:
        relabel.submit("ana", task.item_sha256, labels[task.item_sha256], now=at)
    return relabel.export_consensus(name="relabel-consensus")


def train_and_export(store: Store, version, folder: Path, name: str, steps: int) -> Path:
    checkpoint = folder / f"{name}.safetensors"
    fit(MLP, version, store=store, progress=False, checkpoint_path=checkpoint,
        config=TrainConfig(max_steps=steps, batch_size=64, optimizer="adam", lr=1e-2, weight_decay=0,
                           schedule="constant", val_fraction=0))
    export_checkpoint(checkpoint, folder / f"{name}-export", version, store=store, calibration_items=64)
    return folder / f"{name}-export"


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    "Three export folders made once: two runs on the small MNIST-1D, one on an annotation consensus of it."
    folder = tmp_path_factory.mktemp("exports")
    with Store(f"sqlite:///{folder}/source.db", str(folder / "blobs")) as store:
        base = small_mnist1d(store)
        made = {"v1": train_and_export(store, base, folder, "v1", 40),
                "v2": train_and_export(store, base, folder, "v2", 80)}
        made["annotated"] = train_and_export(store, consensus_version(store), folder, "annotated", 40)
    return made


def rows(store: Store, table) -> int:
    with reading(store.engine) as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar()


def blob_files(store: Store) -> set[str]:
    return {path.name for path in Path(store.blobs.root).rglob("*") if path.is_file()}


def test_register_promote_roll_back_and_ask_what_was_live(store: Store, exports):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    first = registry.register(exports["v1"], "mlp", reason="baseline", who="ana")
    assert (first.number, first.name) == (1, "mlp")
    assert registry.register(exports["v1"], "mlp", who="ben").id == first.id  # identical content: one version
    second = registry.register(exports["v2"], "mlp", reason="longer", who="ana")
    assert second.number == 2 and rows(store, model_versions) == 2
    assert registry.version("mlp").id == second.id and registry.version("mlp:1").id == first.id
    assert registry.version(first.id[:8]).id == first.id

    manifest = first.manifest
    assert manifest["serving"]["file"] in first.files and manifest["serving"]["input"]["shape"] == [40]
    assert len(manifest["serving"]["classes"]) == 10 and manifest["serving"]["golden"]["atol"] > 0
    assert {"checkpoint.safetensors", "code/source.tar.gz", "environment.json", "golden/inputs.npy",
            "report.json", "model.fp32.onnx"} <= set(first.files)

    registry.promote("mlp", 1, reason="first", who="ana", metrics={"accuracy": 50.0})
    registry.promote("mlp", "mlp:2", reason="better", who="ana", gates={"beats v1": {"passed": True}})
    between = utc_now()
    assert registry.version("mlp@champion").id == second.id
    rollback = registry.rollback("mlp", "champion", reason="v2 misbehaves", who="ben")
    assert (rollback.kind, rollback.from_version_id, rollback.to_version_id) == ("rollback", second.id, first.id)
    assert registry.version("mlp@champion").id == first.id
    assert registry.alias_at("mlp", "champion", between).id == second.id
    assert registry.alias_at("mlp", "champion", utc_now()).id == first.id

    log = registry.history("mlp", "champion")
    assert [(line.kind, line.who) for line in log] == [("promote", "ana"), ("promote", "ana"), ("rollback", "ben")]
    assert log[0].metrics == {"accuracy": 50.0} and log[1].gates == {"beats v1": {"passed": True}}
    assert all(earlier.created_at <= later.created_at for earlier, later in zip(log, log[1:], strict=False))
    events = registry.events_after(0)
    assert [event.kind for event in events] == ["registered", "registered", "promoted", "promoted", "rolled_back"]
    assert registry.events_after(events[2].id) == events[3:]
    assert registry.latest_event_id() == events[-1].id
    assert registry.models() == {"mlp": {"versions": 2, "latest": 2, "aliases": {"champion": first.id}}}


def test_pull_rehashes_and_a_pulled_folder_serves_alone(store: Store, exports, tmp_path: Path):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    folder = registry.pull("mlp:1", tmp_path / "pulled")
    pulled = load_pulled(folder)
    assert (pulled.id, pulled.number, pulled.files) == (version.id, 1, version.files)
    golden = pulled.serving["golden"]
    outputs = run_onnx(pulled.path(pulled.serving["file"]), np.load(pulled.path(golden["inputs"])))
    np.testing.assert_allclose(outputs, np.load(pulled.path(golden["outputs"])), atol=golden["atol"])
    assert registry.pull(version, folder) == folder  # the same version there already: nothing to do
    assert registry.check(version) == sum(entry["size"] for entry in version.manifest["files"].values())

    (folder / pulled.serving["file"]).write_bytes(b"not the model")
    with pytest.raises(TamperedArchiveError, match="was changed after it was pulled"):
        load_pulled(folder)
    with pytest.raises(RegistryError, match="exists already"):
        registry.pull(version, folder)


_STALLED_PULL = """
import sys, threading, time
from pathlib import Path
import fsml_nb.registry as registry_module
from fsml_nb.store import Store

copy = registry_module._pull_file
def stalled(registry, version, relative, work):  # one file copied, then the pull hangs until it is killed
    copy(registry, version, relative, work)
    if printed.acquire(blocking=False):  # the pull copies in several threads: one line, once
        print(work, flush=True)
    time.sleep(300)
printed = threading.Lock()
registry_module._pull_file = stalled
with Store(sys.argv[1], sys.argv[2]) as store:
    registry_module.ModelRegistry(store).pull(sys.argv[3], Path(sys.argv[4]))
"""


def stalled_pull(store: Store, ref: str, folder: Path) -> tuple[subprocess.Popen, Path]:
    "A real pull in another process, stopped after its first file; the process and its hidden work folder."
    child = subprocess.Popen([sys.executable, "-c", _STALLED_PULL, store.db_url, store.blobs.url, ref, str(folder)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    work = Path(child.stdout.readline().strip())
    assert work.parent == folder.parent and work.is_dir() and any(work.iterdir()), (work, child.poll())
    return child, work


def test_a_pull_killed_midway_leaves_a_folder_the_next_pull_removes(store: Store, exports, tmp_path: Path):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    parent = tmp_path / "models"
    folder = parent / "pulled"
    killed, killed_work = stalled_pull(store, version.id, folder)
    live, live_work = stalled_pull(store, version.id, folder)  # a second pull of the same target, still running
    try:
        killed.kill()  # SIGKILL: no except, no finally
        killed.wait()
        assert killed_work.is_dir() and killed_work.name.startswith(".pulled-")
        others = [parent / ".pulled-abcdefgh", parent / ".pulled-keep", parent / "pulled.txt", parent / ".other-x"]
        for other in others[:2]:
            other.mkdir()
        for other in others[2:]:
            other.write_text("not the pull's")
        assert registry.pull(version, folder) == folder
        assert not killed_work.exists()  # the dead writer's folder is gone
        assert live_work.is_dir() and any(live_work.iterdir())  # the live writer's is untouched
        assert all(other.exists() for other in others)
        assert load_pulled(folder).id == version.id
    finally:
        live.kill()
        live.wait()
        for child in (killed, live):
            child.stdout.close()
    assert live_work.is_dir()
    assert registry.pull(version, folder) == folder  # there already, and the killed second writer's leftover goes
    assert not live_work.exists()
    assert sorted(path.name for path in parent.iterdir()) == [".other-x", ".pulled-abcdefgh", ".pulled-keep",
                                                              "pulled", "pulled.txt"]


def test_evaluate_cache_removes_damaged_copies_a_killed_process_set_aside(store: Store, exports, tmp_path: Path,
                                                                          monkeypatch):
    from fsml_nb.core import work_prefix
    from fsml_nb.evaluate import pulled_copy

    monkeypatch.setenv("FSML_HOME", str(tmp_path / "home"))
    small_mnist1d(store)
    version = ModelRegistry(store).register(exports["v1"], "mlp")
    folder = pulled_copy(store, version)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ours = work_prefix(folder, "damaged")  # ends with this process's pid
    left = folder.with_name(f"{ours[:-len(f'{os.getpid()}-')]}{int(dead.stdout)}-abcd1234")  # the state a kill leaves
    live = folder.with_name(f"{ours}efgh5678")  # a live process's, between its rename and its rmtree
    for aside in (left, live):
        shutil.copytree(folder, aside)
    (folder / version.serving["file"]).write_bytes(b"damaged")  # this copy is set aside and replaced now
    assert pulled_copy(store, version) == folder and load_pulled(folder).id == version.id
    assert not left.exists() and live.is_dir()
    assert sorted(path.name for path in folder.parent.iterdir()) == sorted([folder.name, live.name])


def test_a_crafted_manifest_in_a_pulled_folder_is_refused(store: Store, exports, tmp_path: Path):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    folder = registry.pull(version, tmp_path / "pulled")
    manifest_path, original = folder / "manifest.json", (folder / "manifest.json").read_bytes()
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((folder / version.serving["file"]).read_bytes())
    crafted = json.loads(original)
    crafted["files"]["../outside.onnx"] = crafted["files"][version.serving["file"]]  # its hash matches the file outside
    crafted["serving"]["file"] = "../outside.onnx"
    manifest_path.write_text(json.dumps(crafted))
    with pytest.raises(TamperedArchiveError, match="not a plain relative path"):
        load_pulled(folder)
    manifest_path.write_bytes(original[: len(original) // 2])  # cut short
    with pytest.raises(TamperedArchiveError, match="not a readable manifest"):
        load_pulled(folder)
    manifest_path.write_bytes(original)
    pulled = load_pulled(folder)
    with pytest.raises(TamperedArchiveError, match="is not a file of model version"):
        pulled.path("../outside.onnx")


@pytest.mark.parametrize("edit", [
    lambda report: [report],  # a list, not an object
    lambda report: {**report, "variants": {"onnx-fp32": report["variants"][0]}},
    lambda report: {**report, "variants": ["model.fp32.onnx"]},
    lambda report: {**report, "files": ["checkpoint.safetensors"]},
    lambda report: {**report, "variants": [{**report["variants"][0], "path": 3}]},
    lambda report: {**report, "recommended": ["onnx-int8"]},
])
def test_a_report_json_of_the_wrong_shape_is_one_clear_error(store: Store, exports, tmp_path: Path, edit):
    folder = Path(shutil.copytree(exports["v1"], tmp_path / "export"))
    report = json.loads((folder / "report.json").read_text())
    (folder / "report.json").write_text(json.dumps(edit(report)))
    with pytest.raises(DamagedExportError, match="report.json: .*re-export the checkpoint"):
        ModelRegistry(store).register(folder, "mlp")
    assert rows(store, model_versions) == 0


def test_a_tampered_archive_is_refused_and_nothing_is_left_half_written(store: Store, exports, tmp_path: Path):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    blob = Path(store.blobs.path(version.files["model.fp32.onnx"]))
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(TamperedArchiveError, match="model.fp32.onnx.*is corrupt"):
        registry.pull("mlp:1", tmp_path / "out" / "pulled")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == []  # no temporary folder left either
    with pytest.raises(TamperedArchiveError):
        registry.check(version)

    edited = json.dumps({**version.manifest, "name": "other"}, sort_keys=True, separators=(",", ":"))
    with pytest.raises(DBAPIError, match="model versions are immutable"), store.engine.begin() as connection:
        connection.execute(model_versions.update().values(manifest=edited))  # refused by the database
    drop_triggers(store, "model_versions")  # someone with DDL rights removes the guard first
    with store.engine.begin() as connection:  # a manifest edited in the database
        connection.execute(model_versions.update().values(manifest=edited))
    with pytest.raises(TamperedArchiveError, match="no longer hashes to its id"):
        registry.version("mlp:1")


def test_every_bad_input_is_one_clear_error_and_nothing_is_half_registered(store: Store, exports, tmp_path: Path):
    registry = ModelRegistry(store)
    before = blob_files(store)
    with pytest.raises(RegistryError, match="which this store does not have"):
        registry.register(exports["v1"], "mlp")  # the dataset version is not in this store
    with pytest.raises(RegistryError, match="which this store does not have"):
        registry.register(exports["v1"].with_name("v1.safetensors"), "mlp")  # the same, from the checkpoint
    assert blob_files(store) == before and rows(store, model_versions) == 0
    small_mnist1d(store)
    before = blob_files(store)

    broken = tmp_path / "broken"
    shutil.copytree(exports["v2"], broken)
    (broken / "model.int8-dynamic.onnx").unlink()
    with pytest.raises(DamagedExportError, match="misses model.int8-dynamic.onnx"):
        registry.register(broken, "mlp")
    (broken / "model.int8-dynamic.onnx").write_bytes((exports["v2"] / "model.int8-dynamic.onnx").read_bytes() + b"!")
    with pytest.raises(DamagedExportError, match="the file was altered"):
        registry.register(broken, "mlp")  # a byte more than export wrote
    shutil.copy(exports["v1"] / "model.int8-dynamic.onnx", broken / "model.int8-dynamic.onnx")
    with pytest.raises(DamagedExportError, match="model.int8-dynamic.onnx is not the file export wrote"):
        registry.register(broken, "mlp")  # v1's file: the same size, other weights
    shutil.rmtree(broken)
    shutil.copytree(exports["v2"], broken)
    fp32 = bytearray((broken / "model.fp32.onnx").read_bytes())
    middle = len(fp32) // 2
    fp32[middle:middle + 4096] = np.full(1024, 1e4, dtype=np.float32).tobytes()  # same size, other weights
    (broken / "model.fp32.onnx").write_bytes(bytes(fp32))
    with pytest.raises(DamagedExportError, match="model.fp32.onnx is not the file export wrote"):
        registry.register(broken, "mlp")
    (broken / "golden" / "onnx-fp32.npy").unlink()
    with pytest.raises(DamagedExportError, match="misses golden/onnx-fp32.npy"):
        registry.register(broken, "mlp")
    (broken / "report.json").unlink()
    with pytest.raises(NotAnExportError, match="has no report.json"):
        registry.register(broken, "mlp")
    with pytest.raises(NotAnExportError, match="does not exist"):
        registry.register(tmp_path / "nowhere", "mlp")
    moved = tmp_path / "moved"
    shutil.copytree(exports["v1"], moved)
    report = json.loads((moved / "report.json").read_text())
    (moved / "report.json").write_text(json.dumps({**report, "checkpoint": "/no/such/checkpoint.safetensors"}))
    with pytest.raises(NotAnExportError, match="pass it with checkpoint=PATH"):
        registry.register(moved, "mlp")
    with pytest.raises(RegistryError, match="is not valid"):
        registry.register(exports["v1"], "my model")
    assert blob_files(store) == before
    assert (rows(store, model_versions), rows(store, model_version_files), rows(store, registry_events)) == (0, 0, 0)

    registry.register(moved, "mlp", checkpoint=exports["v1"].with_name("v1.safetensors"))  # the checkpoint given
    registry.register(exports["v2"], "other")
    with pytest.raises(WrongModelError, match="belongs to model 'other', not 'mlp'"):
        registry.promote("mlp", "other:1")
    with pytest.raises(UnknownAliasError, match="has no alias 'staging'"):
        registry.version("mlp@staging")
    with pytest.raises(UnknownAliasError, match="has no alias 'staging'"):
        registry.rollback("mlp", "staging")
    with pytest.raises(UnknownModelVersionError, match="has no version '9'"):
        registry.promote("mlp", 9)
    with pytest.raises(GateFailedError, match="accuracy failed"):
        registry.promote("mlp", 1, gates={"accuracy": {"passed": False, "value": 3.0}})
    registry.promote("mlp", 1, reason="first")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("mlp")
    with pytest.raises(NoPromotionYetError, match="did not exist yet"):
        registry.alias_at("mlp", "champion", utc_now() - timedelta(days=1))
    with pytest.raises(UnknownAliasError, match="has no alias 'staging'"):
        registry.alias_at("mlp", "staging", utc_now())
    assert len(registry.history("mlp")) == 1


def older_export(export: Path, folder: Path) -> Path:
    "The export as an older fsml_nb wrote it: report.json without file hashes, golden outputs or ONNX metadata."
    shutil.copytree(export, folder, ignore=shutil.ignore_patterns("golden"))
    report = json.loads((export / "report.json").read_text())
    for key in ("files", "golden", "onnx_metadata", "checkpoint_file"):
        report.pop(key)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_an_older_export_is_run_at_register_time_and_checked_that_way(store: Store, exports, tmp_path: Path):
    "An export without recorded hashes and golden outputs: register runs every file, as before."
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(older_export(exports["v1"], tmp_path / "older"), "mlp")
    golden = version.serving["golden"]
    assert (golden["inputs"], golden["outputs"]) == ("golden/inputs.npy", "golden/outputs.npy")
    assert version.serving == {**ModelRegistry(store).register(exports["v1"], "mlp").serving, "golden": golden}
    before = blob_files(store)
    broken = older_export(exports["v2"], tmp_path / "broken")
    shutil.copy(exports["v1"] / "model.int8-dynamic.onnx", broken / "model.int8-dynamic.onnx")
    with pytest.raises(DamagedExportError, match="differ by up to"):
        registry.register(broken, "mlp")  # v1's file: the same size, other weights; only running it tells
    assert blob_files(store) == before and rows(store, model_versions) == 2


def test_a_checkpoint_that_is_not_the_one_exported_is_refused(store: Store, exports, tmp_path: Path):
    "The checkpoint is hashed as it is copied, and must be the one export recorded."
    small_mnist1d(store)
    registry = ModelRegistry(store)
    before = blob_files(store)
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(exports["v1"].with_name("v1.safetensors")), framework="np") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    changed = tmp_path / "v1.safetensors"  # the same tensors (so the ONNX files' record matches), another file
    save_file(tensors, str(changed), metadata={**metadata, "saved_at": json.dumps("2020-01-01T00:00:00+00:00")})
    with pytest.raises(DamagedExportError, match="is not the checkpoint the export was made from"):
        registry.register(exports["v1"], "mlp", checkpoint=changed)
    assert blob_files(store) == before and rows(store, model_versions) == 0


def drop_triggers(store: Store, table: str) -> list[str]:
    "Drop every trigger on `table`, the way someone with database access could."
    with store.engine.begin() as connection:
        if store.dialect == "postgresql":
            names = list(connection.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND "
                                                 f"tgrelid = '{table}'::regclass")).scalars())
            for name in names:
                connection.execute(text(f"DROP TRIGGER {name} ON {table}"))
        else:
            names = list(connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                                 f"AND tbl_name = '{table}'")).scalars())
            for name in names:
                connection.execute(text(f"DROP TRIGGER {name}"))
    assert names
    return names


def run_sql(store: Store, *statements: str) -> None:
    with store.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


REWRITES = [("UPDATE model_promotions SET reason = 'rewritten'", "the promotion log is append-only"),
            ("UPDATE model_promotions SET to_version_id = from_version_id WHERE from_version_id IS NOT NULL",
             "the promotion log is append-only"),
            ("DELETE FROM model_promotions", "the promotion log is append-only"),
            ("UPDATE model_versions SET reason = 'rewritten'", "model versions are immutable"),
            ("DELETE FROM model_versions", "model versions are immutable"),
            ("UPDATE model_version_files SET size = 0", "model versions are immutable"),
            ("DELETE FROM model_version_files", "model versions are immutable"),
            (f"INSERT INTO model_version_files (version_id, path, sha256, size) SELECT id, 'extra.onnx', '{'0' * 64}', "
             "1 FROM model_versions", "file the manifest does not list")]


def test_versions_are_write_once_and_the_promotion_log_append_only_in_the_database(store: Store, exports,
                                                                                    tmp_path: Path):
    "Raw SQL cannot rewrite a version or the log; a dropped trigger comes back when the store is opened again."
    small_mnist1d(store)
    registry = ModelRegistry(store)
    registry.register(exports["v1"], "mlp")
    registry.register(exports["v2"], "mlp")
    registry.promote("mlp", 1, reason="first")
    registry.promote("mlp", 2, reason="second")
    history = registry.history("mlp")
    for statement, message in REWRITES:
        with pytest.raises(DBAPIError, match=message):
            run_sql(store, statement)
    if store.dialect == "postgresql":
        for table, message in (("model_promotions", "append-only"), ("model_versions", "immutable"),
                               ("model_version_files", "immutable")):
            with pytest.raises(DBAPIError, match=message):
                run_sql(store, f"TRUNCATE {table} CASCADE")
            with pytest.raises(DBAPIError, match=message):  # replica mode silences ordinary triggers, not these
                run_sql(store, "SET LOCAL session_replication_role = replica", f"DELETE FROM {table}")
    assert registry.history("mlp") == history and registry.version("mlp@champion").number == 2
    registry.promote("mlp", 1, reason="appending is fine")  # the alias itself still moves
    assert len(registry.history("mlp")) == 3

    dropped = drop_triggers(store, "model_promotions") + drop_triggers(store, "model_versions")
    with Store(store.db_url, store.blobs.url) as reopened:
        with reopened.engine.connect() as connection:
            assert missing_triggers(connection) == []
        for statement, message in REWRITES:
            with pytest.raises(DBAPIError, match=message):
                run_sql(reopened, statement)
    assert len(dropped) >= 4
    assert [line.reason for line in ModelRegistry(store).history("mlp")] == ["first", "second", "appending is fine"]


def _promote_many(db_url: str, blob_url: str, who: str, times: int) -> None:
    with Store(db_url, blob_url) as store:
        registry = ModelRegistry(store)
        for turn in range(times):
            registry.promote("mlp", 1 + turn % 2, alias="champion", reason=f"{who} turn {turn}", who=who)


def test_concurrent_promotions_of_one_alias_are_serialised_and_all_logged(store: Store, exports):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    registry.register(exports["v1"], "mlp")
    registry.register(exports["v2"], "mlp")
    threads = [threading.Thread(target=_promote_many, args=(store.db_url, store.blobs.url, f"thread{n}", 3))
               for n in range(3)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_promote_many, args=(store.db_url, store.blobs.url, f"process{n}", 3))
                 for n in range(2)]
    for worker in [*threads, *processes]:
        worker.start()
    for worker in [*threads, *processes]:
        worker.join(timeout=120)
    assert all(process.exitcode == 0 for process in processes)
    log = registry.history("mlp", "champion")
    assert len(log) == 15 and len({line.id for line in log}) == 15
    assert log[0].from_version_id is None
    for earlier, later in zip(log, log[1:], strict=False):
        assert later.from_version_id == earlier.to_version_id  # each move saw the one before it
        assert later.created_at >= earlier.created_at
    assert registry.version("mlp@champion").id == log[-1].to_version_id
    with reading(store.engine) as connection:
        assert connection.execute(select(func.count()).select_from(registered_models)).scalar() == 1


def test_lineage_both_ways_reaches_the_guide_and_the_items(store: Store, exports):
    consensus = consensus_version(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["annotated"], "relabelled")
    other = registry.register(exports["v1"], "mlp")
    lineage = registry.lineage("relabelled")
    assert lineage.dataset["id"] == consensus.id and lineage.dataset["name"] == "relabel-consensus"
    assert lineage.annotation["project"] == "relabel"
    assert [guide["version"] for guide in lineage.annotation["guides"]] == [2]  # answers were given under v2
    assert lineage.annotation["guides"][0]["title"] == "# Guide v2"
    assert lineage.annotation["source_version"] == other.manifest["dataset_version"]
    assert lineage.sources["licences"] == {"Apache-2.0": SAMPLES} and "github.com" in lineage.sources["hosts"]
    assert lineage.training["config"]["max_steps"] == 40 and lineage.training["code"]["file"] == "code/source.tar.gz"
    assert "relabel" in lineage._repr_markdown_()
    json.dumps(lineage.to_dict())  # JSON-able for the CLI

    assert [found.id for found in registry.models_using_dataset(consensus.id)] == [version.id]
    item = consensus.entries[0].item_sha256  # in the base version too: both models used it
    assert {found.id for found in registry.models_using_item(item)} == {version.id, other.id}
    assert registry.models_using_item("f" * 64) == []


def test_registry_blobs_survive_garbage_collection(store: Store, exports, tmp_path: Path):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    report = store.collect_garbage(dry_run=False, min_age_seconds=0)
    assert report.orphans == ()
    assert registry.check(version) > 0
    load_pulled(registry.pull(version, tmp_path / "after-gc"))


def test_registering_a_checkpoint_exports_it_first(tmp_path: Path, exports):
    with Store(f"sqlite:///{tmp_path}/fsml.db", str(tmp_path / "blobs")) as store:
        small_mnist1d(store)
        registry = ModelRegistry(store)
        version = registry.register(exports["v1"].with_name("v1.safetensors"), "from-checkpoint")
        assert version.serving["file"].endswith(".onnx") and "report.json" in version.files
        assert not list(Path(tempfile_root()).glob("fsml-register-*/export"))


def tempfile_root() -> str:
    import tempfile
    return tempfile.gettempdir()


def fsml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"
    return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=300)


def test_the_registry_from_the_shell(db_url: str, exports, tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("FSML_")}
    env.update(FSML_HOME=str(tmp_path / "home"), FSML_DB_URL=db_url, FSML_BLOB_URL=str(tmp_path / "blobs"))
    with Store(db_url, str(tmp_path / "blobs")) as store:
        small_mnist1d(store)
    registered = fsml("registry", "register", str(exports["v1"]), "--name", "mlp", "--reason", "r", "--json", env=env)
    assert registered.returncode == 0, registered.stderr
    version_id = json.loads(registered.stdout)["id"]
    promoted = fsml("registry", "promote", "mlp", "1", "--reason", "baseline", "--who", "ana", env=env)
    assert promoted.returncode == 0, promoted.stderr
    at = fsml("registry", "history", "mlp", "--at", utc_now().isoformat(), "--json", env=env)
    assert json.loads(at.stdout)["id"] == version_id
    history = json.loads(fsml("registry", "history", "mlp", "--json", env=env).stdout)
    assert [(line["who"], line["reason"]) for line in history] == [("ana", "baseline")]
    listed = json.loads(fsml("registry", "list", "--json", env=env).stdout)
    assert listed["mlp"]["aliases"] == {"champion": version_id}
    shown = json.loads(fsml("registry", "show", "mlp@champion", "--json", env=env).stdout)
    assert shown["manifest"]["serving"]["file"] in shown["files"]
    lineage = json.loads(fsml("registry", "lineage", version_id[:8], "--json", env=env).stdout)
    assert lineage["dataset"]["name"] == "mnist1d-small"
    pulled = fsml("registry", "pull", "mlp@champion", str(tmp_path / "pulled"), env=env)
    assert pulled.returncode == 0 and load_pulled(tmp_path / "pulled").id == version_id
    for args, message in [(("registry", "show", "mlp@staging"), "has no alias 'staging'"),
                          (("registry", "history", "mlp", "--at", "yesterday"), "is not an ISO time"),
                          (("registry", "rollback", "mlp", "--reason", "x"), "nothing to roll back to"),
                          (("registry", "register", str(tmp_path), "--name", "x"), "has no report.json")]:
        failed = fsml(*args, env=env)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1


def test_the_manifest_row_cannot_hide_a_changed_file_list(store: Store, exports):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    drop_triggers(store, "model_version_files")  # the database refuses the change below until then
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE model_version_files SET sha256 = :sha WHERE path = 'report.json'"),
                           {"sha": "0" * 64})
    with pytest.raises(TamperedArchiveError, match="file list .* was changed"):
        registry.version(version.id)


def test_a_file_row_the_manifest_does_not_list_is_refused_when_written(store: Store, exports, tmp_path: Path):
    "An extra file row is refused by the database; with its trigger dropped, reading the version refuses it."
    small_mnist1d(store)
    registry = ModelRegistry(store)
    version = registry.register(exports["v1"], "mlp")
    listed = version.files["report.json"]
    extra = text("INSERT INTO model_version_files (version_id, path, sha256, size) VALUES (:id, :path, :sha, :size)")
    for path, sha, size in (("extra.onnx", listed, 10), ("golden/extra.npy", "0" * 64, 1)):
        with pytest.raises(DBAPIError, match="file the manifest does not list"):
            with store.engine.begin() as connection:
                connection.execute(extra, {"id": version.id, "path": path, "sha": sha, "size": size})
    assert registry.version(version.id).files == version.files  # a legitimate registration was not refused
    assert registry.register(exports["v2"], "mlp").number == 2
    drop_triggers(store, "model_version_files")
    with store.engine.begin() as connection:
        connection.execute(extra, {"id": version.id, "path": "extra.onnx", "sha": listed, "size": 10})
    with pytest.raises(TamperedArchiveError, match="file list .* was changed"):
        registry.version(version.id)
    with pytest.raises(TamperedArchiveError, match="file list .* was changed"):
        registry.pull(version.id, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()


def test_the_file_server_can_be_any_fsspec_url(tmp_path: Path, exports):
    "The blob store behind a memory:// URL stands in for s3:// or a mounted share: register, pull, tamper."
    import uuid

    import fsspec

    url = f"memory://fsml-registry-{uuid.uuid4().hex}"
    with Store(f"sqlite:///{tmp_path}/fsml.db", url) as store:
        small_mnist1d(store)
        registry = ModelRegistry(store)
        version = registry.register(exports["v1"], "mlp")
        assert not store.blobs.is_local and store.blobs.exists(version.files["model.fp32.onnx"])
        assert load_pulled(registry.pull(version, tmp_path / "pulled")).id == version.id
        memory = fsspec.filesystem("memory")
        memory.pipe_file(store.blobs.path(version.files["report.json"]), b"{}")
        with pytest.raises(TamperedArchiveError, match="report.json"):
            registry.pull(version, tmp_path / "again")
        assert not (tmp_path / "again").exists()
        memory.rm(url.removeprefix("memory://"), recursive=True)


def test_a_file_changed_while_registered_is_refused_or_stored_with_the_hash_of_its_stored_bytes(
        store: Store, exports, tmp_path: Path, monkeypatch):
    small_mnist1d(store)
    registry = ModelRegistry(store)
    export = tmp_path / "export"
    shutil.copytree(exports["v1"], export)
    checkpoint = tmp_path / "v1.safetensors"
    shutil.copy(exports["v1"].with_name("v1.safetensors"), checkpoint)
    original = checkpoint.read_bytes()
    real_copy_file_range = os.copy_file_range

    def rewrite_checkpoint() -> None:  # another process rewrites the checkpoint in place: one bit, same size
        with open(checkpoint, "r+b") as handle:
            handle.seek(len(original) // 2)
            handle.write(bytes([original[len(original) // 2] ^ 1]))

    def copying(source: int, target: int, count: int, *args, before: bool) -> int:
        is_checkpoint = os.readlink(f"/proc/self/fd/{source}") == str(checkpoint)
        if is_checkpoint and before and checkpoint.read_bytes() == original:
            rewrite_checkpoint()  # while it is being copied, before its bytes reach the blob store
        copied = real_copy_file_range(source, target, count, *args)
        if is_checkpoint and not before and checkpoint.read_bytes() == original:
            rewrite_checkpoint()  # after its bytes were copied: the blob keeps what was copied
        return copied

    before = blob_files(store)
    monkeypatch.setattr(os, "copy_file_range", lambda *args: copying(*args, before=True))
    with pytest.raises(DamagedExportError, match="is not the checkpoint the export was made from"):
        registry.register(export, "mlp", checkpoint=checkpoint)
    assert blob_files(store) == before  # nothing half-registered: no blob, no row
    assert (rows(store, model_versions), rows(store, model_version_files), rows(store, registry_events)) == (0, 0, 0)

    checkpoint.write_bytes(original)
    monkeypatch.setattr(os, "copy_file_range", lambda *args: copying(*args, before=False))
    version = registry.register(export, "mlp", checkpoint=checkpoint)
    assert checkpoint.read_bytes() != original  # it did change, after its copy was made
    stored = Path(store.blobs.path(version.files["checkpoint.safetensors"])).read_bytes()
    assert stored == original and version.files["checkpoint.safetensors"] == hashlib.sha256(stored).hexdigest()
    monkeypatch.undo()
    assert registry.check(version) > len(original)  # every blob hashes to its address
