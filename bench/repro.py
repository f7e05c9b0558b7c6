"""Benchmark: the full reproduction tables, the distillation study and the pruning study.

    python bench/repro.py [--only mnist1d,digits,distill,prune] [--out bench/out]

Prints Markdown tables:
1. `mnist1d`: every row of Greydanus & Kobak's table over 3 seeds, with the wall time of the
   whole table (target: every row within 3 points; under 10 minutes on 2 cores).
2. `digits`: timm ResNet-18 on digits (target >= 97% test accuracy).
3. distillation: a small CNN student on MNIST-1D, alone vs distilled from the reference CNN
   (on the training set only, and with an unlabelled transfer set of 4,000 generated
   signals, as in Hinton et al.), 3 seeds (target: distilled mean >= alone mean).
4. pruning: the digits timm ResNet-18 and the reference MNIST-1D CNN, each pruned to 50% of
   its parameters and fine-tuned (target: <= 1 point of accuracy lost), with parameters,
   MACs and latency.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from fsml_nb.compress import distillation_study, measure, prune_to_ratio, reports_to_markdown
import torch

from fsml_nb.data import generate_mnist1d, import_digits, import_mnist1d
from fsml_nb.repro import MNIST1D_TRAINING, RECIPES, reproduce, save_report, to_markdown
from fsml_nb.store import Store
from fsml_nb.train import ModelSpec, fit, training_splits

REFERENCE_CNN = ModelSpec("python", "fsml_nb.repro:Mnist1dCNN")
SMALL_CNN = ModelSpec("python", "fsml_nb.repro:Mnist1dCNN", {"channels": 8})


def run_recipe(name: str, store: Store, out: Path | None) -> None:
    report = reproduce(name, store=store)
    print(to_markdown(report))
    print(f"\nall rows within tolerance: {report.all_within}\n")
    if out:
        save_report(report, out / name)


def run_distillation(store: Store) -> None:
    version = import_mnist1d(store)
    teacher = fit(REFERENCE_CNN, version, store=store, config=MNIST1D_TRAINING, progress=False).model
    transfer = torch.from_numpy(generate_mnist1d(seed=1042)["x"]).float()  # new signals; their labels are not used
    study = distillation_study(SMALL_CNN, teacher, version, store, MNIST1D_TRAINING, seeds=(0, 1, 2),
                               temperature=4.0, alpha=0.9, unlabelled=transfer)
    print("### Distillation on MNIST-1D: CNN (25 channels) teacher, CNN (8 channels) student, T=4, alpha=0.9\n")
    print(study.to_markdown())
    print(f"\ndistilled (with transfer set) - alone: {study.gain:+.2f} points (target >= 0)\n")


def prune_and_report(title: str, model, version, store: Store, test, fine_tune) -> None:
    before = measure(model, test, title)
    pruned = prune_to_ratio(model, test.inputs, ratio=0.5)
    after_pruning = measure(pruned, test, "pruned to 50% of parameters")
    tuned = fit(pruned, version, store=store, config=fine_tune, progress=False).model
    after_tuning = measure(tuned, test, "pruned + fine-tuned")
    print(f"### Structured pruning of the {title} to 50% of its parameters\n")
    print(reports_to_markdown([before, after_pruning, after_tuning]))
    print(f"\naccuracy change after fine-tuning: {after_tuning.accuracy - before.accuracy:+.2f} points "
          "(target >= -1)\n")


def run_pruning(store: Store) -> None:
    "The over-parameterised timm ResNet-18 on digits, and the tiny (5,210-parameter) MNIST-1D CNN."
    digits = import_digits(store)
    row = RECIPES["digits"].rows[0]
    _, _, digits_test = training_splits(digits, store, row.config)
    resnet = fit(row.model, digits, store=store, config=row.config, progress=False).model
    prune_and_report("digits ResNet-18 (timm)", resnet, digits, store, digits_test,
                     replace(row.config, epochs=5, lr=5e-4, warmup_steps=0))
    version = import_mnist1d(store)
    _, _, test = training_splits(version, store, MNIST1D_TRAINING)
    cnn = fit(REFERENCE_CNN, version, store=store, config=MNIST1D_TRAINING, progress=False).model
    prune_and_report("MNIST-1D CNN", cnn, version, store, test, MNIST1D_TRAINING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="mnist1d,digits,distill,prune")
    parser.add_argument("--out", type=Path, default=None, help="also save each recipe's report.md/json/png here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/fsml.db", f"{tmp}/blobs")
        for part in args.only.split(","):
            started = time.perf_counter()
            if part in ("mnist1d", "digits"):
                run_recipe(part, store, args.out)
            elif part == "distill":
                run_distillation(store)
            elif part == "prune":
                run_pruning(store)
            else:
                raise SystemExit(f"unknown part {part!r}")
            print(f"({part}: {time.perf_counter() - started:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
