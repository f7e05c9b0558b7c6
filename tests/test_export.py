"""Export: the parity arithmetic, and every bad input leaving nothing behind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsml_nb.data import import_digits, import_folder
from fsml_nb.export import ExportError, export_checkpoint, onnx_metadata, parity
from fsml_nb.store import Store
from fsml_nb.train import CheckpointError, Split, TrainConfig, fit, timm_spec


def test_parity_counts_agreement_differences_and_changed_items():
    split = Split(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]), ["a" * 64, "b" * 64, "c" * 64, "d" * 64])
    reference = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 1.0]])  # torch: 0, 1, 1, 1
    variant = np.array([[2.0, 0.5], [0.0, 2.0], [3.0, 2.0], [0.0, 1.25]])  # variant: 0, 1, 0, 1
    result = parity("v", variant, reference, split)
    assert result.accuracy == 50.0  # right on items a and b
    assert result.agreement == 75.0 and result.changed_items == ["c" * 64]
    assert result.max_abs_logit_diff == 3.0 and result.mean_abs_logit_diff == pytest.approx(3.75 / 8)


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


def test_a_timm_checkpoint_exports_every_variant(exported):
    store, digits, checkpoint, folder = exported
    report = export_checkpoint(checkpoint, folder / "out", digits, store=store, method="percentile", calibration_items=64)
    fp32 = report.variant("onnx-fp32")
    assert fp32.parity.agreement >= 99.9 and fp32.parity.max_abs_logit_diff <= 1e-4
    static = report.variant("onnx-int8-static")
    assert static.size_bytes <= 0.3 * fp32.size_bytes
    metadata = onnx_metadata(static.path)
    assert metadata["fsml.calibration_version"] == digits.id and metadata["fsml.quantization"].endswith("percentile")
    assert metadata["fsml.preprocessing"]["input_shape"] == [1, 8, 8] and metadata["fsml.classes"][3] == "3"
    assert report.recommended in {variant.name for variant in report.variants}


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
    assert "CPU b1 ms (x torch)" in markdown and "no CUDA or TensorRT" not in markdown
