"""Training, reproduction and compression: the machinery end to end, and every bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fsml_nb.data import import_digits, import_mnist1d
from fsml_nb.repro import RECIPES, UnknownRecipeError, reproduce, to_json
from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store
from fsml_nb.train import (CheckpointError, IncompatibleDataError, ModelSpec, TrainConfig, UnknownModelError, fit,
                           load_model, read_checkpoint, timm_spec)

QUICK = TrainConfig(max_steps=5, batch_size=32, eval_every_steps=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    folder = tmp_path_factory.mktemp("train")
    with Store(f"sqlite:///{folder}/fsml.db", str(folder / "blobs")) as opened:
        yield opened


@pytest.fixture(scope="module")
def digits(store):
    return import_digits(store)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_runs_quickly(store, recipe: str):
    report = reproduce(recipe, store=store, seeds=(0,), quick=True, progress=False)
    data = to_json(report)
    assert data["quick"] and len(data["rows"]) == len(RECIPES[recipe].rows)
    assert all(0 <= row["mean"] <= 100 and row["reported"] > 0 and row["source"] for row in data["rows"])


def test_unknown_names_are_clear(store, digits):
    with pytest.raises(UnknownRecipeError, match="no reproduction recipe 'cifar'"):
        reproduce("cifar", store=store)
    with pytest.raises(UnknownModelError, match="did you mean resnet50"):
        fit("resnet5O", digits, store=store, config=QUICK, progress=False)
    with pytest.raises(UnknownModelError, match="no model builder"):
        fit(ModelSpec("python", "fsml_nb.repro:NoSuchNet"), digits, store=store, config=QUICK, progress=False)


def test_labels_that_do_not_fit_the_model(store, digits):
    mnist1d = import_mnist1d(store)
    with pytest.raises(IncompatibleDataError, match="10 classes"):
        fit(nn.Linear(40, 4), mnist1d, store=store, config=QUICK, progress=False)
    with pytest.raises(IncompatibleDataError, match="cannot take inputs of shape"):
        fit(ModelSpec("python", "fsml_nb.repro:Mnist1dCNN"), digits, store=store, config=QUICK, progress=False)
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
    mlp = ModelSpec("python", "torch.nn:Linear", {"in_features": 40, "out_features": 10})
    fit(mlp, import_mnist1d(store), store=store, config=QUICK, checkpoint_path=path, progress=False)
    other = import_mnist1d(store, name="mnist1d-small", num_samples=1000)
    with pytest.raises(CheckpointError, match="was trained on version"):
        fit(mlp, other, store=store, config=QUICK, resume=path, progress=False)
    assert json.loads(json.dumps(read_checkpoint(path).metadata["model_spec"]))["name"] == "torch.nn:Linear"


def test_unlabelled_inputs_need_a_loss_that_uses_them(store, digits):
    from fsml_nb.train import TrainError

    with pytest.raises(TrainError, match="need a loss"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, config=QUICK, progress=False,
            unlabelled=torch.zeros(4, 1, 8, 8))
