"""Export: the parity arithmetic, and every bad input leaving nothing behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fsml_nb.compress import prune_to_ratio
from fsml_nb.data import import_digits, import_folder
from fsml_nb.export import (ExportError, Parity, Variant, _recommend, drop_interval, export_checkpoint, onnx_metadata,
                            parity)
from fsml_nb.store import Store
from fsml_nb.train import (CheckpointError, Split, TrainConfig, config_for_data, fit, load_model, model_spec_of,
                           read_checkpoint, save_checkpoint, timm_spec, training_splits)


def test_parity_counts_agreement_differences_and_changed_items():
    split = Split(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]), ["a" * 64, "b" * 64, "c" * 64, "d" * 64])
    reference = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 1.0]])  # torch: 0, 1, 1, 1
    variant = np.array([[2.0, 0.5], [0.0, 2.0], [3.0, 2.0], [0.0, 1.25]])  # variant: 0, 1, 0, 1
    result = parity("v", variant, reference, split)
    assert result.accuracy == 50.0  # right on items a and b
    assert result.agreement == 75.0 and result.changed_items == ["c" * 64]
    assert result.max_abs_logit_diff == 3.0 and result.mean_abs_logit_diff == pytest.approx(3.75 / 8)
    assert result.items == 4 and result.drop == 25.0  # item c: right in torch, wrong in the variant
    low, high = result.drop_interval
    assert low < -25 and high > 25  # four items cannot say much
    assert not result.beyond_tolerance and parity("v", variant, reference, split, logit_tolerance=1.0).beyond_tolerance


def test_the_drop_interval_narrows_with_more_items():
    widths = []
    for items in (34, 340, 3400):
        drop, low, high = drop_interval(np.ones(items, dtype=bool), np.ones(items, dtype=bool))
        assert drop == 0 and low < 0 < high
        widths.append(high - low)
    assert widths[0] > 15 and widths[0] > widths[1] > widths[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    store = Store(f"sqlite:///{folder}/fsml.db", str(folder / "blobs"))
    digits = import_digits(store)
    checkpoint = folder / "resnet.safetensors"
    fit(timm_spec("resnet10t", 10, in_chans=1, small_input=True), digits, store=store, progress=False,
        config=TrainConfig(max_steps=20, batch_size=64, val_fraction=0), checkpoint_path=checkpoint)
    yield store, digits, checkpoint, folder
    store.close()


def test_a_timm_checkpoint_exports_every_variant_quietly(exported, capfd):
    store, digits, checkpoint, folder = exported
    capfd.readouterr()
    report = export_checkpoint(checkpoint, folder / "out", digits, store=store, method="percentile", calibration_items=64)
    console = "".join(capfd.readouterr())
    assert "[torch.onnx]" not in console and "pre-processing" not in console, console
    assert report.evaluation_items == 360 and all(v.parity.items == 360 for v in report.variants)
    for variant in report.variants:
        for key in ("cpu b1", "cpu b32"):
            q1, q3 = variant.latency_iqr_ms[key]
            assert q1 <= variant.latency_ms[key] <= q3
    markdown = (folder / "out" / "report.md").read_text()
    assert "Evaluated on 360 items" in markdown and "drop (points, 95% interval)" in markdown
    assert "cpu b1 ms [IQR] (x torch)" in markdown
    assert ("Recommended for batch size 1:" in markdown) != ("No recommendation for batch size 1" in markdown)
    fp32 = report.variant("onnx-fp32")
    assert fp32.parity.agreement >= 99.9 and fp32.parity.max_abs_logit_diff <= 1e-4
    static = report.variant("onnx-int8-static")
    assert static.size_bytes <= 0.3 * fp32.size_bytes
    metadata = onnx_metadata(static.path)
    assert metadata["fsml.calibration_version"] == digits.id and metadata["fsml.quantization"].endswith("percentile")
    assert metadata["fsml.preprocessing"]["input_shape"] == [1, 8, 8] and metadata["fsml.classes"][3] == "3"
    assert report.recommended is None or report.recommended in {variant.name for variant in report.variants}


def _listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_calibration_with_other_classes_is_refused(exported, tmp_path: Path):
    store, _, checkpoint, folder = exported
    for name in ("a", "b", "c"):
        (tmp_path / "three" / name).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((8, 8), index * 40 + ord(name), dtype=np.uint8)).save(
                tmp_path / "three" / name / f"{index}.png")
    three = import_folder(tmp_path / "three", store=store, test_fraction=0.3)
    before = _listing(folder)
    with pytest.raises(ExportError, match="has classes"):
        export_checkpoint(checkpoint, folder / "three-out", three, store=store)
    assert _listing(folder) == before


@pytest.mark.parametrize("arguments, message", [
    ({"calibration_split": "val"}, "has no split 'val'"),
    ({"calibration_items": 0}, "is empty"),
    ({"method": "kl"}, "unknown calibration method"),
    ({"serving_batch": 8}, "serving_batch must be 1 or 32"),
])
def test_bad_export_arguments_leave_nothing(exported, arguments, message):
    store, digits, checkpoint, folder = exported
    before = _listing(folder)
    with pytest.raises(ExportError, match=message):
        export_checkpoint(checkpoint, folder / "bad-out", digits, store=store, **arguments)
    assert _listing(folder) == before


def test_a_checkpoint_that_does_not_load(exported):
    store, digits, checkpoint, folder = exported
    broken = folder / "broken.safetensors"
    broken.write_bytes(checkpoint.read_bytes()[:777])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        export_checkpoint(broken, folder / "broken-out", digits, store=store)
    assert not (folder / "broken-out").exists()


def test_extra_execution_providers_get_their_own_latency_columns(exported, monkeypatch):
    "The CUDA/TensorRT branch, exercised with the CPU provider standing in (no GPU on CI machines)."
    import fsml_nb.export as export_module

    store, digits, checkpoint, folder = exported
    monkeypatch.setattr(export_module, "_gpu_providers", lambda: ["CPUExecutionProvider"])
    report = export_checkpoint(checkpoint, folder / "gpu-out", digits, store=store, calibration_items=32)
    for name in ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static"):
        assert {"CPU b1", "CPU b32"} <= set(report.variant(name).latency_ms)
    assert "CPU b1" not in report.variant("torch-fp32").latency_ms
    markdown = (folder / "gpu-out" / "report.md").read_text()
    assert "CPU b1 ms [IQR] (x torch)" in markdown and "no CUDA or TensorRT" not in markdown


def _variant(name: str, b1: tuple[float, float, float], drop: float = 0.0, max_diff: float = 0.0,
             tolerance: float = float("inf"), items: int = 1000) -> Variant:
    b32 = tuple(10 * value for value in b1)
    interval = drop_interval(np.ones(items, dtype=bool), np.arange(items) >= round(drop * items / 100))[1:]
    check = Parity(name, 90 - drop, 100.0, max_diff, max_diff / 2, [], items, drop, interval, tolerance)
    return Variant(name, None, 1, check, {"cpu b1": b1[1], "cpu b32": b32[1]},
                   {"cpu b1": (b1[0], b1[2]), "cpu b32": (b32[0], b32[2])})


def test_the_choice_is_refused_when_latency_spreads_too_much():
    calm = [_variant("torch-fp32", (0.9, 1.0, 1.1)), _variant("onnx-fp32", (0.45, 0.5, 0.55)),
            _variant("onnx-int8-static", (0.3, 0.4, 0.5), drop=0.2, max_diff=36.8, tolerance=3.0)]
    choice, notes = _recommend(calm, budget=0.5, serving_batch=1)
    assert choice == "onnx-int8-static"
    assert any("onnx-int8-static: max |logit difference| 36.8 is beyond its tolerance 3" in note for note in notes)
    busy = [calm[0], _variant("onnx-fp32", (0.05, 0.5, 3.0)), calm[2]]
    choice, notes = _recommend(busy, budget=0.5, serving_batch=1)
    assert choice is None and "no recommendation: at batch 1 the latency of onnx-fp32 spreads over 590%" in notes[0]
    assert _recommend(busy, budget=0.5, serving_batch=1, max_spread=10.0)[0] == "onnx-int8-static"


def test_a_small_evaluation_set_is_said_to_be_small():
    few = [_variant("torch-fp32", (0.9, 1.0, 1.1), items=34), _variant("onnx-int8-static", (0.3, 0.4, 0.5), items=34)]
    choice, notes = _recommend(few, budget=0.5, serving_batch=32)
    assert notes[0] == "evaluated on 34 items: one item is 2.94 accuracy points"
    assert any("too small to confirm it is within the 0.5-point budget" in note for note in notes)


def test_a_pruned_checkpoint_loads_and_exports_like_any_other(exported):
    store, digits, checkpoint, folder = exported
    model = load_model(checkpoint)
    pruned = prune_to_ratio(model, digits_inputs(store, digits), ratio=0.5)
    spec = model_spec_of(pruned)
    assert spec.layer_sizes and spec.name == "resnet10t"
    tuned = fit(pruned, digits, store=store, config=TrainConfig(max_steps=2, val_fraction=0),
                checkpoint_path=folder / "pruned.safetensors", progress=False)
    rebuilt = load_model(tuned.checkpoint)  # from the declared sizes alone
    sample = digits_inputs(store, digits)[:4]
    assert torch.equal(rebuilt(sample), tuned.model.eval()(sample))
    report = export_checkpoint(tuned.checkpoint, folder / "pruned-out", digits, store=store, calibration_items=32)
    assert report.variant("onnx-fp32").parity.agreement >= 99.9


def digits_inputs(store, digits) -> torch.Tensor:
    from fsml_nb.train import load_split

    return load_split(digits, "test", store).inputs


def test_a_custom_module_checkpoint_exports_when_given_its_model(exported, tmp_path: Path):
    store, digits, _, folder = exported
    result = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits, store=store, progress=False,
                 config=TrainConfig(max_steps=2, val_fraction=0), checkpoint_path=tmp_path / "mlp.safetensors")
    with pytest.raises(CheckpointError, match="export_checkpoint\\(..., model=MyModel\\(\\)\\)"):
        export_checkpoint(result.checkpoint, tmp_path / "no", digits, store=store)
    report = export_checkpoint(result.checkpoint, tmp_path / "yes", digits, store=store, calibration_items=32,
                               model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    assert report.variant("onnx-fp32").parity.agreement >= 99.9


def test_fsml_export_refuses_a_checkpoint_that_names_code(tmp_path: Path):
    marker = tmp_path / "payload-ran"
    (tmp_path / "fsml_cli_payload.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
                                                  "def run(**kwargs):\n    return None\n")
    crafted = save_checkpoint(tmp_path / "crafted.safetensors", {"model.weight": torch.zeros(2, 2)},
                              {"model_spec": {"source": "python", "name": "fsml_cli_payload:run"}, "input_shape": [2]})
    fsml = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FSML_")}, "FSML_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])])}
    result = subprocess.run([fsml, "export", str(crafted), "--calib", "digits"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.startswith("fsml: error: refusing model source 'python'")
    assert len(result.stderr.strip().splitlines()) == 1 and not marker.exists()


def test_the_export_benchmark_keeps_its_artefacts_when_asked(tmp_path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_export", Path(__file__).parents[1] / "bench" / "export.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with bench.kept_or_temporary(tmp_path / "keep") as kept:
        (kept / "model.onnx").write_text("x")
    assert (tmp_path / "keep" / "model.onnx").exists()
    with bench.kept_or_temporary(None) as temporary:
        (temporary / "model.onnx").write_text("x")
    assert not temporary.exists()


@pytest.fixture(scope="module")
def normalised(exported):
    "A checkpoint trained with the config fit chooses when given none (inputs standardised inside the model), cut short."
    store, digits, _, folder = exported
    train, _, _ = training_splits(digits, store, TrainConfig())
    chosen = replace(config_for_data(len(train), (1, 8, 8)), max_steps=4)
    result = fit("resnet10t", digits, store=store, config=chosen, checkpoint_path=folder / "normalised.safetensors",
                 progress=False)
    assert model_spec_of(result.model).adapters == ("small_input", "normalize") and chosen.normalize
    return result.checkpoint


def _fp32_matches_torch(report) -> None:
    fp32 = report.variant("onnx-fp32")
    assert fp32.parity.agreement == 100.0 and not fp32.parity.beyond_tolerance, fp32.parity


def test_a_checkpoint_of_the_default_config_exports_with_its_normalisation_inside(exported, normalised):
    from fsml_nb.export import OnnxRunner

    store, digits, _, folder = exported
    model = load_model(normalised)  # rebuilt from the spec, statistics from the weights
    assert not torch.equal(model.mean, torch.zeros_like(model.mean))
    report = export_checkpoint(normalised, folder / "normalised-out", digits, store=store, calibration_items=32)
    _fp32_matches_torch(report)
    pixels = digits_inputs(store, digits)[:16]  # pixel / 255, as a server sends them
    onnx_logits = OnnxRunner(report.variant("onnx-fp32").path)(pixels)
    with torch.no_grad():
        assert np.abs(onnx_logits - model(pixels).numpy()).max() < 1e-3  # the file standardises by itself
        assert np.abs(onnx_logits - model.net(pixels).numpy()).max() > 1e-2  # (it would differ without)


def test_a_pruned_normalised_checkpoint_exports_from_the_shell(exported, normalised, tmp_path: Path):
    store, digits, _, folder = exported
    pruned = prune_to_ratio(load_model(normalised), digits_inputs(store, digits), ratio=0.5)
    spec = model_spec_of(pruned)
    assert spec.adapters == ("small_input", "normalize") and all(name.startswith("net.") for name in spec.layer_sizes)
    tuned = fit(pruned, digits, store=store, config=TrainConfig(max_steps=2, val_fraction=0),
                checkpoint_path=tmp_path / "pruned-normalised.safetensors", progress=False)
    sample = digits_inputs(store, digits)[:4]
    assert torch.equal(load_model(tuned.checkpoint)(sample), tuned.model.eval()(sample))
    fsml = shutil.which("fsml", path=str(Path(sys.executable).parent)) or "fsml"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FSML_")}, "FSML_HOME": str(tmp_path / "home"),
           "FSML_DB_URL": f"sqlite:///{folder}/fsml.db", "FSML_BLOB_URL": str(folder / "blobs"),
           "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([fsml, "export", str(tuned.checkpoint), "--calib", digits.id[:12], "--out",
                             str(tmp_path / "shell-out")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "shell-out" / "report.json").read_text())
    fp32 = next(variant for variant in written["variants"] if variant["name"] == "onnx-fp32")
    assert fp32["parity"]["agreement"] == 100.0 and fp32["parity"]["max_abs_logit_diff"] <= 1e-3


def test_a_pruned_spec_trained_with_the_default_config_is_normalised_and_exports(exported, tmp_path: Path):
    store, digits, checkpoint, folder = exported
    pruned_spec = model_spec_of(prune_to_ratio(load_model(checkpoint), digits_inputs(store, digits), ratio=0.5))
    assert "normalize" not in pruned_spec.adapters and not any(n.startswith("net.") for n in pruned_spec.layer_sizes)
    train, _, _ = training_splits(digits, store, TrainConfig())
    result = fit(pruned_spec, digits, store=store, config=replace(config_for_data(len(train), (1, 8, 8)), max_steps=2),
                 checkpoint_path=tmp_path / "spec.safetensors", progress=False)
    spec = read_checkpoint(result.checkpoint).model_spec
    assert spec.adapters[-1] == "normalize" and spec.layer_sizes == {f"net.{name}": sizes for name, sizes
                                                                      in pruned_spec.layer_sizes.items()}
    sample = digits_inputs(store, digits)[:4]
    assert torch.equal(load_model(result.checkpoint)(sample), result.model.eval()(sample))
    _fp32_matches_torch(export_checkpoint(result.checkpoint, tmp_path / "out", digits, store=store, calibration_items=32))


def test_one_onnx_session_factory_for_every_module(tmp_path: Path):
    "Export, registry, evaluate and serve open ONNX files with core.onnx_session: each its own error, serve's options."
    from fsml_nb import core, evaluate, registry, serve
    from fsml_nb.evaluate import EvaluationError, load_classifier
    from fsml_nb.export import OnnxRunner
    from fsml_nb.registry import DamagedExportError, onnx_outputs
    from fsml_nb.serve import ModelLoadError, ServedModel, write_linear_model_folder

    for module in (evaluate, registry, serve):
        assert module.onnx_session is core.onnx_session, module.__name__
    package = Path(core.__file__).parent
    opening = {path.name for path in package.glob("*.py") if "InferenceSession(" in path.read_text()}
    assert opening == {"core.py", "card.py"}, opening  # card's is in a script run by a bare subprocess (memory)

    good = write_linear_model_folder(tmp_path / "good", np.eye(64, 3))
    bad = write_linear_model_folder(tmp_path / "bad", np.eye(64, 3))
    model = bad / "model.onnx"
    model.write_bytes(model.read_bytes()[:40])  # cut short
    unreadable = f"{model} is not a readable ONNX model"
    with pytest.raises(ExportError, match=unreadable):
        OnnxRunner(model)
    with pytest.raises(DamagedExportError, match=unreadable):
        onnx_outputs(model, np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(EvaluationError, match=unreadable):
        load_classifier(model)
    with pytest.raises(ModelLoadError, match=unreadable):
        ServedModel.load(bad)

    served = ServedModel.load(good).session.get_session_options()  # serve: 1 thread, no spinning
    assert (served.intra_op_num_threads, served.get_session_config_entry("session.intra_op.allow_spinning")) == (1, "0")
    spinning = ServedModel.load(good, threads=2, spinning=True).session.get_session_options()
    assert (spinning.intra_op_num_threads, spinning.get_session_config_entry("session.intra_op.allow_spinning")) == (2, "1")
    default = core.onnx_session(good / "model.onnx").get_session_options()  # export, registry, evaluate: ORT's defaults
    assert (default.intra_op_num_threads, default.get_session_config_entry("session.intra_op.allow_spinning")) == (0, "1")
    outputs, _ = onnx_outputs(good / "model.onnx", np.ones((2, 1, 8, 8), np.float32))
    np.testing.assert_allclose(outputs, np.ones((2, 3), np.float32))

    # the factory is in core so that a serving worker never imports torch (about 240 MiB it does not use)
    script = ("import sys; from fsml_nb.serve import ServedModel; ServedModel.load(sys.argv[1]); "
              "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script, str(good)], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(package.parent)})
    assert result.stdout.strip() == "False", result.stdout + result.stderr
