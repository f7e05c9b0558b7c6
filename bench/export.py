"""Benchmark: export, quantize and measure the digits timm model and the MNIST-1D CNN.

    python bench/export.py [--method minmax] [--digits-epochs 30] [--keep DIR]

Trains each model (the digits recipe's ResNet-18; the reference MNIST-1D CNN), runs
`fsml_nb.export.export_checkpoint` on it, prints the parity/latency table (torch eager FP32 is
the baseline measured in the same run) and checks the targets:
- ONNX FP32: top-1 agreement with torch >= 99.9%, max |logit difference| <= 1e-4;
- digits timm model: ONNX FP32 faster than torch eager at batch 1 and at batch 32;
- static INT8: accuracy drop <= 1 point, file <= 0.3x the FP32 file;
- the recommended variant is never slower than ONNX FP32 (when the measurements allow a
  recommendation at all: on a busy machine the report refuses to choose, and says why).

With `--keep DIR` the checkpoints and export folders are kept in DIR (which must not exist);
otherwise they go to a temporary folder that is removed at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path

from fsml_nb.data import import_digits, import_mnist1d
from fsml_nb.export import ExportReport, export_checkpoint
from fsml_nb.repro import MNIST1D_TRAINING, RECIPES
from fsml_nb.store import Store
from fsml_nb.train import fit, registered_spec


def check_targets(report: ExportReport, latency_target: bool) -> list[tuple[str, bool, str]]:
    torch_fp32, fp32 = report.variant("torch-fp32"), report.variant("onnx-fp32")
    static = report.variant("onnx-int8-static")
    checks = [
        ("ONNX FP32 agreement >= 99.9%", fp32.parity.agreement >= 99.9, f"{fp32.parity.agreement:.2f}%"),
        ("ONNX FP32 max |logit diff| <= 1e-4", fp32.parity.max_abs_logit_diff <= 1e-4,
         f"{fp32.parity.max_abs_logit_diff:.2e}"),
        ("static INT8 accuracy drop <= 1 point", torch_fp32.parity.accuracy - static.parity.accuracy <= 1.0,
         f"{torch_fp32.parity.accuracy - static.parity.accuracy:+.2f}"),
        ("static INT8 file <= 0.3x FP32", static.size_bytes <= 0.3 * fp32.size_bytes,
         f"{static.size_bytes / fp32.size_bytes:.2f}x"),
    ]
    if report.recommended is None:
        checks.append(("recommended never slower than ONNX FP32 (b1)", False, f"no recommendation: {report.notes[0]}"))
    else:
        recommended = report.variant(report.recommended)
        checks.append(("recommended never slower than ONNX FP32 (b1)",
                       recommended.latency_ms["cpu b1"] <= fp32.latency_ms["cpu b1"] * 1.0001,
                       f"{report.recommended}: {recommended.latency_ms['cpu b1']:.3f} vs "
                       f"{fp32.latency_ms['cpu b1']:.3f} ms"))
    if latency_target:
        for batch in ("b1", "b32"):
            ratio = fp32.latency_ms[f"cpu {batch}"] / torch_fp32.latency_ms[f"cpu {batch}"]
            checks.append((f"ONNX FP32 faster than torch eager at {batch}", ratio < 1.0, f"{ratio:.2f}x torch"))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    parser.add_argument("--digits-epochs", type=int, default=30)
    parser.add_argument("--keep", type=Path, default=None, help="keep checkpoints and exports in this new folder")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} exists already; name a new folder")
    with kept_or_temporary(args.keep) as tmp:
        store = Store(f"sqlite:///{tmp}/fsml.db", str(tmp / "blobs"))
        digits_row = RECIPES["digits"].rows[0]
        digits = import_digits(store)
        fit(digits_row.model, digits, store=store, config=replace(digits_row.config, epochs=args.digits_epochs),
            checkpoint_path=tmp / "digits.safetensors", progress=False)
        mnist1d = import_mnist1d(store)
        fit(registered_spec("mnist1d-cnn"), mnist1d, store=store, config=MNIST1D_TRAINING,
            checkpoint_path=tmp / "mnist1d.safetensors", progress=False)
        for name, version, latency_target in (("digits", digits, True), ("mnist1d", mnist1d, False)):
            report = export_checkpoint(tmp / f"{name}.safetensors", tmp / f"{name}-export", version, store=store,
                                       method=args.method)
            print(report._repr_markdown_())
            print("\n| target | met | measured |\n| --- | :---: | --- |")
            for label, met, measured in check_targets(report, latency_target):
                print(f"| {label} | {'yes' if met else '**no**'} | {measured} |")
            print()
    if args.keep is not None:
        print(f"checkpoints, exports and the store are kept in {args.keep}")


@contextlib.contextmanager
def kept_or_temporary(keep: Path | None):
    "The folder to work in: `keep` (created, left in place) or a temporary one removed afterwards."
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep
        return
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


if __name__ == "__main__":
    main()
