"""The requirements card as a contract: kept with each model version, read by deploy's gates."""
from __future__ import annotations

from pathlib import Path

import pytest

from fsml_nb.card import CardError, load_card
from fsml_nb.core import PARITY_MIN_AGREEMENT
from fsml_nb.data import import_mnist1d
from fsml_nb.export import export_checkpoint
from fsml_nb.registry import ModelRegistry
from fsml_nb.serve import deploy
from fsml_nb.store import Store
import fsml_nb.repro  # noqa: F401  (registers the MNIST-1D architectures)
from fsml_nb.train import TrainConfig, fit, registered_spec

REPORTS: dict = {}  # the fixture's export report, for the recommendation test

CARD = """
[problem]
summary = "Tell the ten MNIST-1D classes apart."
[metric]
name = "accuracy"
minimum = 0.2
dataset_version = "mnist1d-card"
split = "test"
[latency]
p95 = "{latency}"
batch = 1
"""


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    "A store with one exported MNIST-1D model; the store's folder and the export folder."
    folder = tmp_path_factory.mktemp("card")
    with Store(f"sqlite:///{folder}/fsml.db", str(folder / "blobs")) as store:
        version = import_mnist1d(store, name="mnist1d-card", num_samples=400)
        checkpoint = folder / "mlp.safetensors"
        fit(registered_spec("mnist1d-mlp"), version, store=store, progress=False,
            checkpoint_path=checkpoint, config=TrainConfig(max_steps=40, val_fraction=0))
        REPORTS["export"] = export_checkpoint(checkpoint, folder / "export", version, store=store, calibration_items=64)
    return folder


def card_file(folder: Path, latency: str) -> Path:
    path = folder / f"card-{latency.replace(' ', '')}.toml"
    path.write_text(CARD.format(latency=latency))
    return path


def test_the_card_is_kept_with_the_version_and_gates_the_deploy(registered: Path):
    with Store(f"sqlite:///{registered}/fsml.db", str(registered / "blobs")) as store:
        registry = ModelRegistry(store)
        loose, tight = card_file(registered, "5 s"), card_file(registered, "0.0001 ms")
        version = registry.register(registered / "export", "mlp", card=loose)
        assert version.manifest["requirements"]["sha256"] == load_card(loose).sha256
        assert (registry.pull(version.id, registered / "pulled") / "requirements.toml").read_text() == loose.read_text()
        refused = deploy(registry, "mlp", version.id, card=load_card(tight), wait_seconds=0,
                         evaluation={"id": "e" * 32, "metrics": {"accuracy": 0.5}})
        assert not refused.promoted
        assert not refused.gates["card latency p95"]["passed"]
        assert "card latency p95" in refused.message
        below = deploy(registry, "mlp", version.id, card=load_card(loose), wait_seconds=0,
                       evaluation={"id": "e" * 32, "metrics": {"accuracy": 0.1}})
        assert not below.promoted and not below.gates["card metric"]["passed"]
        accepted = deploy(registry, "mlp", version.id, card=load_card(loose), wait_seconds=0,
                          evaluation={"id": "e" * 32, "metrics": {"accuracy": 0.5}})
        assert accepted.promoted
        assert registry.aliases("mlp")["champion"] == version.id


def test_a_card_with_a_wrong_field_is_refused_before_anything_is_stored(registered: Path):
    bad = registered / "bad.toml"
    bad.write_text(CARD.format(latency="5 ms").replace("minimum", "minimun"))
    with Store(f"sqlite:///{registered}/fsml.db", str(registered / "blobs")) as store:
        registry = ModelRegistry(store)
        before = len(registry.models())
        with pytest.raises(CardError, match="unknown field 'minimun'"):
            registry.register(registered / "export", "other", card=bad)
        assert len(registry.models()) == before


def test_the_export_recommends_only_variants_within_the_cards_latency(registered: Path):
    "With a budget between the measured FP32 and INT8 latencies, only the faster INT8 file can be chosen."
    from fsml_nb.export import _recommend

    report = REPORTS["export"]
    latency = {variant.name: variant.latency_ms["cpu b1"] for variant in report.variants}
    agreeing = {variant.name for variant in report.variants if variant.parity.agreement >= PARITY_MIN_AGREEMENT}
    onnx = {name: value for name, value in latency.items() if name.startswith("onnx") and name in agreeing}
    fastest = min(onnx, key=onnx.get)
    slower = [name for name in onnx if onnx[name] > onnx[fastest]]
    budget = (onnx[fastest] + min(onnx[name] for name in slower)) / 2 if slower else onnx[fastest] * 1.01
    choice, notes = _recommend(report.variants, budget=100.0, serving_batch=1, max_spread=float("inf"),
                               latency_budget_ms=budget)
    assert choice == fastest and onnx[choice] <= budget
    assert all(any(name in note and "over the card's latency budget" in note for note in notes) for name in slower)
    flipping = [name for name in latency if name.startswith("onnx") and name not in agreeing]  # a barely trained
    assert all(any(name in note and "deploy's parity gate" in note for note in notes) for name in flipping)  # model
    none, why = _recommend(report.variants, budget=100.0, serving_batch=1, max_spread=float("inf"),
                           latency_budget_ms=min(onnx.values()) / 10)
    assert none is None and "budgets" in why[0]


def test_a_card_naming_an_unknown_dataset_version_names_the_field(registered: Path):
    from fsml_nb.card import check_model, parse_card

    with Store(f"sqlite:///{registered}/fsml.db", str(registered / "blobs")) as store:
        version = ModelRegistry(store).register(registered / "export", "mlp")
        card = parse_card(CARD.format(latency="5 ms").replace('"mnist1d-card"', '"no-such-version"'))
        with pytest.raises(CardError, match=r"metric\.dataset_version: no dataset version 'no-such-version'"):
            check_model(store, version.id, card)


def test_the_cached_copy_of_a_model_version_is_checked_shared_and_repaired(registered: Path, monkeypatch):
    "Evaluations and checks run a registry version from a cache folder: re-hashed on use, two pulls at once, repaired."
    import os

    import fsml_nb.registry as registry_module
    from fsml_nb.evaluate import evaluate_model, pulled_copy
    from fsml_nb.export import file_entry

    monkeypatch.setenv("FSML_HOME", str(registered / "home"))
    with Store(f"sqlite:///{registered}/fsml.db", str(registered / "blobs")) as store:
        version = ModelRegistry(store).register(registered / "export", "mlp")
        serving = version.manifest["serving"]["file"]
        expected = version.manifest["files"][serving]["sha256"]

        real_replace, raced = os.replace, []

        def another_process_first(source, destination):  # the other evaluation renames its copy in just before ours
            if not raced and Path(destination).name == version.id:
                raced.append(destination)
                ModelRegistry(store).pull(version.id, destination)
            return real_replace(source, destination)

        monkeypatch.setattr(registry_module.os, "replace", another_process_first)
        folder = pulled_copy(store, version)
        monkeypatch.setattr(registry_module.os, "replace", real_replace)
        assert raced and file_entry(folder / serving)["sha256"] == expected
        assert not [path for path in folder.parent.iterdir() if path.name.startswith(".")]  # no temporary folder left

        other = next(path for path in (registered / "export").glob("*.onnx") if file_entry(path)["sha256"] != expected)
        (folder / serving).write_bytes(other.read_bytes())  # a valid ONNX file of the same classes: another variant
        run = evaluate_model(version, "mnist1d-card", store=store)
        assert run.model_id == version.id and file_entry(folder / serving)["sha256"] == expected  # replaced, not run

        manifest = (folder / "manifest.json").read_bytes()
        (folder / "manifest.json").write_bytes(manifest[: len(manifest) // 2])  # a copy killed while written by hand
        assert (pulled_copy(store, version) / "manifest.json").read_bytes() == manifest


def test_a_crafted_card_is_one_clear_error_before_any_measurement(tmp_path: Path):
    "Bytes that are not UTF-8, a folder, a date-time deadline, bounds no metric can meet, zero or endless budgets."
    from datetime import date

    from fsml_nb.card import check_card, parse_card

    (tmp_path / "latin1.toml").write_bytes('[problem]\nsummary = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(CardError, match="latin1.toml is not UTF-8 text"):
        load_card(tmp_path / "latin1.toml")
    with pytest.raises(CardError, match="is a folder, not a requirements card"):
        load_card(tmp_path)
    refused = {
        "[schedule]\ndeadline = 2027-01-31T10:00:00\n": "schedule.deadline must be a date",
        "[metric]\nname = 'ece'\nmaximum = nan\n": "metric.maximum is a fraction between 0 and 1",
        "[metric]\nname = 'ece'\nmaximum = -0.1\n": "metric.maximum is a fraction between 0 and 1",
        "[latency]\np95 = '1e400 ms'\n": "latency.p95: '1e400 ms' must be a positive, finite amount",
        "[latency]\np95 = '0 ms'\n": "latency.p95: '0 ms' must be a positive, finite amount",
        "[latency]\nbatch = 0\n": "latency.batch must be at least 1",
        "[memory]\nmodels_per_device = -1\n": "memory.models_per_device must be at least 1",
        "[formulation]\nclasses = [0, 1]\n": "formulation.classes must be a list of strings",
        "[data]\nallowed_licences = ['CC-BY-4.0', 4]\n": "data.allowed_licences must be a list of strings",
    }
    for text, message in refused.items():
        with pytest.raises(CardError, match=message):
            parse_card(text)
    assert parse_card("[schedule]\ndeadline = 2027-01-31\n").get("schedule", "deadline") == date(2027, 1, 31)
    two_classes = parse_card("[metric]\nname = 'top3'\nminimum = 0.9\n")  # a model of two classes has no top-3
    row = check_card(two_classes, {"id": "e" * 32, "metrics": {"accuracy": 1.0}}).rows[0]
    assert row.met is None and "top3 was not computed" in row.measured


def test_an_interrupted_init_leaves_the_old_card_or_none(tmp_path: Path, monkeypatch):
    "Each file of `fsml init` appears whole (written aside, renamed): a crash mid-write never leaves half a card."
    import fsml_nb.card as card_module
    from fsml_nb.card import init_project

    def crash(source, destination):
        raise KeyboardInterrupt  # the process dies between writing a file aside and renaming it

    monkeypatch.setattr(card_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        init_project(tmp_path / "fresh")
    assert not [path for path in (tmp_path / "fresh").rglob("*") if path.is_file()]  # nothing, not half a card
    monkeypatch.undo()
    init_project(tmp_path / "kept")
    card = tmp_path / "kept" / "requirements.toml"
    card.write_text(card.read_text().replace("minimum = 0.9", "minimum = 0.95"))  # the user filled it in
    monkeypatch.setattr(card_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        init_project(tmp_path / "kept", force=True)
    assert load_card(card).metric["minimum"] == 0.95 and not list((tmp_path / "kept").glob(".*"))


def test_two_exports_into_the_same_folder_keep_the_first(registered: Path, monkeypatch):
    "The second export to finish finds the folder made meanwhile: one clear error, the first export's files untouched."
    import fsml_nb.export as export_module
    from fsml_nb.export import ExportError

    out = registered / "raced-export"
    real_write = export_module._write_reports

    def the_other_export_finishes_first(report, folder):
        real_write(report, folder)
        out.mkdir()
        (out / "report.json").write_text('{"written by": "the other export"}')

    monkeypatch.setattr(export_module, "_write_reports", the_other_export_finishes_first)
    with Store(f"sqlite:///{registered}/fsml.db", str(registered / "blobs")) as store:
        with pytest.raises(ExportError, match="raced-export was made by someone else while this export ran"):
            export_checkpoint(registered / "mlp.safetensors", out, "mnist1d-card", store=store, calibration_items=16)
    assert (out / "report.json").read_text() == '{"written by": "the other export"}' and len(list(out.iterdir())) == 1
    assert not [path for path in registered.iterdir() if path.name.startswith(".raced-export")]  # no work folder left
