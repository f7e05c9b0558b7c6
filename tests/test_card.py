"""The requirements card as a contract: kept with each model version, read by deploy's gates."""
from __future__ import annotations

from pathlib import Path

import pytest

from fsml_nb.card import CardError, load_card
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
    onnx = {name: value for name, value in latency.items() if name.startswith("onnx")}
    fastest = min(onnx, key=onnx.get)
    slower = [name for name in onnx if onnx[name] > onnx[fastest]]
    budget = (onnx[fastest] + min(onnx[name] for name in slower)) / 2 if slower else onnx[fastest] * 1.01
    choice, notes = _recommend(report.variants, budget=100.0, serving_batch=1, max_spread=float("inf"),
                               latency_budget_ms=budget)
    assert choice == fastest and onnx[choice] <= budget
    assert all(any(name in note and "over the card's latency budget" in note for note in notes) for name in slower)
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
