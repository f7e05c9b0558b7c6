"""Training, reproduction and compression: the machinery end to end, and every bad input."""
from __future__ import annotations

import io
import json
import sys
import typing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from fsml_nb.compress import distill
from fsml_nb.data import import_digits, import_mnist1d
from fsml_nb.repro import (MNIST1D_PAPER, MNIST1D_TRAINING, RECIPES, ReproReport, RowResult, UnknownRecipeError,
                           plot_report, reproduce, to_json)
from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store
from fsml_nb.train import (SMALL_INPUT_MAX_SIDE, CheckpointError, IncompatibleDataError, TrainConfig, TrainError,
                           TrainWarning, UnknownModelError, config_for_data, fit, load_model, read_checkpoint,
                           register_architecture, registered_spec, save_checkpoint, timm_spec, training_splits)

QUICK = TrainConfig(max_steps=5, batch_size=32, eval_every_steps=5)
register_architecture("test-linear", nn.Linear)


@pytest.fixture(autouse=True)
def fsml_home(tmp_path: Path, monkeypatch) -> Path:
    "Default checkpoints go to a fresh FSML_HOME; thread settings from the environment do not leak in."
    monkeypatch.setenv("FSML_HOME", str(tmp_path / "home"))
    for name in ("FSML_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    folder = tmp_path_factory.mktemp("train")
    with Store(f"sqlite:///{folder}/fsml.db", str(folder / "blobs")) as opened:
        yield opened


@pytest.fixture(scope="module")
def digits(store):
    return import_digits(store)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_runs_quickly(store, recipe: str, fsml_home: Path):
    report = reproduce(recipe, store=store, seeds=(0,), quick=True, progress=False)
    assert not (fsml_home / "checkpoints").exists()  # a reproduction keeps its numbers, not a checkpoint per run
    data = to_json(report)
    assert data["quick"] and len(data["rows"]) == len(RECIPES[recipe].rows)
    assert all(0 <= row["mean"] <= 100 and row["reported"] > 0 and row["source"] for row in data["rows"])


def test_unknown_names_are_clear(store, digits):
    with pytest.raises(UnknownRecipeError, match="no reproduction recipe 'cifar'"):
        reproduce("cifar", store=store)
    with pytest.raises(UnknownModelError, match="did you mean resnet50"):
        fit("resnet5O", digits, store=store, config=QUICK, progress=False)
    with pytest.raises(UnknownModelError, match="no registered architecture 'mnist1d-cnm'; did you mean mnist1d-cnn"):
        fit(registered_spec("mnist1d-cnm"), digits, store=store, config=QUICK, progress=False)


def test_labels_that_do_not_fit_the_model(store, digits):
    mnist1d = import_mnist1d(store)
    with pytest.raises(IncompatibleDataError, match="10 classes"):
        fit(nn.Linear(40, 4), mnist1d, store=store, config=QUICK, progress=False)
    with pytest.raises(IncompatibleDataError, match="cannot take inputs of shape"):
        fit(registered_spec("mnist1d-cnn"), digits, store=store, config=QUICK, progress=False)
    multi = store.import_version([LabelledItem(NewItem(b"x", "image/png"), ["a"], "train")],
                                 LabelSchema("multi_label", ("a", "b")), "multi", source="test")
    with pytest.raises(IncompatibleDataError, match="single_label"):
        fit(nn.Linear(1, 2), multi, store=store, config=QUICK, progress=False)


def test_checkpoints_refuse_the_wrong_model_and_damage(store, digits, tmp_path: Path):
    path = tmp_path / "cnn.safetensors"
    fit(timm_spec("resnet10t", 10, in_chans=1, small_input=True), digits, store=store, config=QUICK,
        checkpoint_path=path, progress=False)
    metadata = read_checkpoint(path).metadata
    assert metadata["dataset_version"] == digits.id and metadata["config"]["max_steps"] == 5
    assert set(metadata) >= {"fsml_nb_version", "git_commit", "model_spec", "history", "torch_version"}
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(path, model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "flipped.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "cut.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not an fsml_nb checkpoint"):
        load_model(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "absent.safetensors")


def test_resume_refuses_another_dataset_version(store, digits, tmp_path: Path):
    path = tmp_path / "mlp.safetensors"
    mlp = registered_spec("test-linear", in_features=40, out_features=10)
    fit(mlp, import_mnist1d(store), store=store, config=QUICK, checkpoint_path=path, progress=False)
    other = import_mnist1d(store, name="mnist1d-small", num_samples=1000)
    with pytest.raises(CheckpointError, match="was trained on version"):
        fit(mlp, other, store=store, config=QUICK, resume=path, progress=False)
    assert json.loads(json.dumps(read_checkpoint(path).metadata["model_spec"]))["name"] == "test-linear"


def test_unlabelled_inputs_need_a_loss_that_uses_them(store, digits):
    with pytest.raises(TrainError, match="need a loss"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK, progress=False,
            unlabelled=torch.zeros(4, 1, 8, 8))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _images_version(store: Store, name: str, side: int, labels: list[tuple[str, str]], classes: tuple[str, ...]):
    "A version of random RGB images of side x side, one per (class, split) pair."
    rng = np.random.default_rng(len(labels) + side)
    items = [LabelledItem(NewItem(_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)), "image/png"), label, split)
             for label, split in labels]
    return store.import_version(items, LabelSchema("single_label", classes), name, source="test")


def test_cifar_sized_inputs_get_the_small_input_stem_and_fit_says_so(store, capsys):
    three = _images_version(store, "cifar-sized", 32, [(c, s) for c in "abc" for s in ("train",) * 4 + ("test",)],
                            ("a", "b", "c"))
    result = fit("resnet10t", three, store=store, config=TrainConfig(max_steps=1, val_fraction=0), progress=True)
    assert SMALL_INPUT_MAX_SIDE >= 32
    assert result.model.conv1[0].stride == (1, 1) and isinstance(result.model.maxpool, nn.Identity)
    assert read_checkpoint(result.checkpoint).model_spec.adapters == ("small_input",)
    assert "fit: resnet10t: small-input stem (3x3 stride-1 first convolution, no max-pool) for 32x32 inputs" in \
        capsys.readouterr().out


class Constant(nn.Module):
    "Answers class 0 for everything: the model that has learnt nothing."
    def __init__(self, classes: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(inputs), -1)


def test_a_run_that_ends_at_chance_is_warned_about(store, digits):
    with pytest.warns(TrainWarning, match=r"test accuracy \d+\.\d% is chance for 10 classes"):
        result = fit(Constant(10), digits, store=store, config=TrainConfig(max_steps=1, lr=0.0), progress=False)
    assert any("is chance for 10 classes" in note for note in result.notes)


def test_single_class_training_is_refused(store):
    lonely = _images_version(store, "one-class", 8, [("cat", "train")] * 3 + [("cat", "test")], ("cat",))
    with pytest.raises(IncompatibleDataError, match="has only one class \\('cat'\\) in its 'train' split"):
        fit("resnet10t", lonely, store=store, config=QUICK, progress=False)
    two_but_one_used = _images_version(store, "one-used", 8, [("cat", "train")] * 3 + [("dog", "test")], ("cat", "dog"))
    with pytest.raises(IncompatibleDataError, match="only one class \\('cat'\\)"):
        fit("resnet10t", two_but_one_used, store=store, config=QUICK, progress=False)


def test_a_version_without_a_test_split_is_said(store):
    untested = _images_version(store, "no-test", 8, [(c, "train") for c in "ab" * 3], ("a", "b"))
    with pytest.warns(TrainWarning, match="has no 'test' split \\(it has train\\): no test accuracy"):
        result = fit("resnet10t", untested, store=store, config=QUICK, progress=False)
    assert result.test is None and any("no 'test' split" in note for note in result.notes)


def test_fit_keeps_a_checkpoint_by_default_and_says_where(store, digits, fsml_home: Path, capsys):
    result = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK)
    assert result.checkpoint.parent == fsml_home / "checkpoints" and result.checkpoint.is_file()
    assert f"fit: checkpoint written to {result.checkpoint}" in capsys.readouterr().out
    assert fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK,
               checkpoint_path=False, progress=False).checkpoint is None


@pytest.fixture
def payload(tmp_path: Path, monkeypatch) -> Path:
    "An importable module that leaves a marker file if anything imports it."
    marker = tmp_path / "payload-ran"
    (tmp_path / "fsml_test_payload.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\ndef run(**kwargs):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


@pytest.mark.parametrize("spec", [
    {"source": "python", "name": "fsml_test_payload:run", "kwargs": {}, "adapters": []},
    {"source": "registered", "name": "fsml_test_payload:run", "kwargs": {}, "adapters": []},
    {"source": "timm", "name": "resnet10t", "kwargs": {}, "adapters": [], "layer_sizes": {"conv1": "fsml_test_payload"}},
])
def test_a_crafted_checkpoint_cannot_import_or_call_code(tmp_path: Path, payload: Path, spec):
    crafted = save_checkpoint(tmp_path / "crafted.safetensors", {"model.weight": torch.zeros(2, 2)},
                              {"model_spec": spec, "classes": ["a", "b"]})
    with pytest.raises(UnknownModelError):
        load_model(crafted)
    assert not payload.exists() and "fsml_test_payload" not in sys.modules


def test_an_old_format_checkpoint_that_names_code_is_refused(tmp_path: Path, payload: Path):
    old = tmp_path / "old.safetensors"
    from fsml_nb.train import tensors_digest

    tensors = {"model.weight": torch.zeros(2, 2)}
    save_file(tensors, str(old), metadata={"format": "fsml.checkpoint/1", "tensors_sha256": tensors_digest(tensors),
                                           "model_spec": json.dumps({"source": "python", "name": "fsml_test_payload:run"})})
    with pytest.raises(CheckpointError, match="format fsml.checkpoint/1.*retrain it"):
        load_model(old)
    assert not payload.exists()


@pytest.mark.parametrize("key, value", [("classes", list("ABCDEFGHIJ")), ("dataset_version", "0" * 64),
                                        ("model_spec", {"source": "timm", "name": "resnet18", "kwargs": {}})])
def test_edited_checkpoint_metadata_is_detected(store, digits, tmp_path: Path, key, value):
    path = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK,
               checkpoint_path=tmp_path / "mlp.safetensors", progress=False).checkpoint
    with safe_open(str(path), framework="pt") as handle:
        raw, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata={**raw, key: json.dumps(value)})
    with pytest.raises(CheckpointError, match="was changed after it was saved"):
        read_checkpoint(tmp_path / "edited.safetensors")


def test_thread_count_is_chosen_and_restored(store, digits, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK,
                 checkpoint_path=False, progress=False)
    assert result.threads == 1 and "torch threads: 1 from OMP_NUM_THREADS" in result.notes
    monkeypatch.setenv("FSML_THREADS", "2")
    assert fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK,
               checkpoint_path=False, progress=False).threads == 2  # the fsml setting wins over OpenMP's
    monkeypatch.delenv("FSML_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    measured = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK,
                   checkpoint_path=False, progress=False)
    assert any(note.startswith("torch threads: ") and "measured" in note for note in measured.notes)
    assert torch.get_num_threads() == before


def test_distill_admits_a_timm_name():
    assert str in typing.get_args(typing.get_type_hints(distill)["student"])


def test_the_train_notebook_quotes_the_recipe_step_count():
    notebook = json.loads((Path(__file__).parents[1] / "nbs" / "05_train.ipynb").read_text())
    prose = " ".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    assert f"constant 1e-2 for {MNIST1D_TRAINING.max_steps:,} steps" in prose


def test_the_report_plot_draws_the_tolerance_band():
    report = ReproReport("mnist1d", MNIST1D_PAPER, "0" * 64, 3.0, None, False,
                         [RowResult("CNN", 94.0, "paper", [93.0, 95.0], 1.0)])
    bands = [c for c in plot_report(report).axes[0].collections if "tolerance" in c.get_label()]
    assert len(bands) == 1
    extent = bands[0].get_paths()[0].get_extents()
    assert (extent.x0, extent.x1) == (91.0, 97.0)


def test_fit_without_a_config_chooses_one_for_the_data_and_says_so(store, capsys):
    three = _images_version(store, "defaults", 8, [(c, s) for c in "abc" for s in ("train",) * 6 + ("test",)],
                            ("a", "b", "c"))
    result = fit("resnet10t", three, store=store, threads=1)
    printed = capsys.readouterr().out
    train, _, _ = training_splits(three, store, TrainConfig())
    chosen = config_for_data(len(train), (3, 8, 8))
    assert result.config == chosen and chosen.augment == ("crop",) and chosen.normalize and chosen.label_smoothing > 0
    assert f"fit: config chosen for {len(train)} training items: adamw lr 0.002" in printed
    assert "random shifts up to 1 px" in printed and "inputs standardised inside the model" in printed
    assert "fit: expect about " in printed and "more on this machine" in printed  # timed from its first steps
    assert chosen.epochs == 200 and "samples_seen=" not in printed  # at the 200-epoch cap: no longer run to offer
    spec = read_checkpoint(result.checkpoint).model_spec
    assert spec.adapters == ("small_input", "normalize")
    reloaded = load_model(result.checkpoint)
    assert not torch.equal(reloaded.mean, torch.zeros_like(reloaded.mean))
    inputs = torch.rand(2, 3, 8, 8)
    assert torch.equal(reloaded(inputs), result.model(inputs))


def test_normalize_leaves_a_module_you_built_alone(store, digits):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    result = fit(net, digits, store=store, config=TrainConfig(max_steps=2, normalize=True), checkpoint_path=False,
                 progress=False)
    assert result.model is net and any("inputs not standardised" in note for note in result.notes)


def test_augmented_runs_resume_exactly(store, digits, tmp_path: Path):
    config = TrainConfig(max_steps=12, batch_size=64, lr=3e-3, augment=("crop", "flip"), crop_padding=1,
                         eval_every_steps=6)

    def mlp() -> nn.Module:
        torch.manual_seed(3)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    straight = fit(mlp(), digits, store=store, config=config, threads=1, checkpoint_path=False, progress=False)
    fit(mlp(), digits, store=store, config=config, threads=1, checkpoint_path=tmp_path / "part.safetensors",
        until_step=6, progress=False)
    resumed = fit(mlp(), digits, store=store, config=config, resume=tmp_path / "part.safetensors", progress=False)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    plain = fit(mlp(), digits, store=store, config=replace(config, augment=()), threads=1, checkpoint_path=False,
                progress=False)
    assert not torch.equal(plain.model[1].weight, straight.model[1].weight)  # augmentation did change the batches


def test_bad_augmentation_settings_are_refused():
    with pytest.raises(TrainError, match="unknown augmentation 'rotate'"):
        TrainConfig(augment=("crop", "rotate"))
    with pytest.raises(TrainError, match="crop_padding must be 0 or more"):
        TrainConfig(crop_padding=-1)


def test_the_validation_split_is_stratified_by_class_and_chosen_by_hash(store):
    labels = [("a", "train")] * 30 + [("b", "train")] * 10 + [("c", "train")] * 3 + [(c, "test") for c in "abc"]
    uneven = _images_version(store, "uneven", 8, labels, ("a", "b", "c"))
    train, val, _ = training_splits(uneven, store, TrainConfig())
    assert torch.bincount(val.targets, minlength=3).tolist() == [3, 1, 1]  # 10% of each class, at least one
    for target, held in enumerate(torch.bincount(val.targets, minlength=3).tolist()):
        of_class = sorted([sha for sha, t in zip(train.shas, train.targets.tolist(), strict=True) if t == target]
                          + [sha for sha, t in zip(val.shas, val.targets.tolist(), strict=True) if t == target])
        assert {sha for sha, t in zip(val.shas, val.targets.tolist(), strict=True) if t == target} == set(of_class[:held])
    assert training_splits(uneven, store, TrainConfig())[1].shas == val.shas
    with pytest.raises(TrainError, match="val_fraction must be at least 0 and below 1"):
        fit("resnet10t", uneven, store=store, config=replace(QUICK, val_fraction=1.5), progress=False)
