"""Benchmark: the full reproduction tables, the distillation study and the pruning study.

    python bench/repro.py [--only mnist1d,digits,distill,prune,threads,stem,default] [--out bench/out]

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
5. `threads` (issue 9 section 4; not in the default run): the MNIST-1D table in a quick mode
   (`--steps` steps per row, default 600 instead of 6,000, one seed) timed quiet and with one
   busy process (a pure-Python loop holding a core) beside it, with torch's default thread
   count and with fit's choice (target: fit's choice busy within 2.5x of quiet).
6. `stem` (issue 17.1; not in the default run): a 3-class folder of drawn shapes (`--per-class`,
   default 60 images per class) at `--sides` (default 32), ResNet-18 with each stem, trained with
   the previous defaults (`TrainConfig()`, the baseline) and with every default (no config:
   `fit` chooses one for the data); `fit(name, version)` with no other argument is the row of
   the stem it picks. Accuracy on the folder's test split and on `--held-out` (default 200) more
   images per class drawn the same way with another seed, with a 95% Wilson interval; time.
7. `default` (issue 17, the first call's cost; not in the default run): the same 32x32 folder,
   `fit("resnet18", version)` with no other argument against the previous default budget
   (`config_for_data(..., samples_seen=15_000)`, the baseline), the two side by side in two
   processes of one torch thread each (FSML_THREADS=1), so that both see the same machine; each
   row gives fit's own time estimate from its first steps beside the measured time.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fsml_nb.compress import ModelComparison, distillation_study, measure, prune_to_ratio
from fsml_nb.data import generate_mnist1d, import_digits, import_folder, import_mnist1d
from fsml_nb.repro import MNIST1D_TRAINING, RECIPES, reproduce, save_report
from fsml_nb.store import Store
from fsml_nb.train import (SMALL_INPUT_MAX_SIDE, Split, TrainConfig, available_threads, fit, load_split,
                            registered_spec, timm_spec, training_splits)

REFERENCE_CNN = registered_spec("mnist1d-cnn")
SMALL_CNN = registered_spec("mnist1d-cnn", channels=8)


def run_recipe(name: str, store: Store, out: Path | None) -> None:
    report = reproduce(name, store=store)
    print(report._repr_markdown_())
    print(f"\nall rows within tolerance: {report.all_within}\n")
    if out:
        save_report(report, out / name)


def run_distillation(store: Store) -> None:
    version = import_mnist1d(store)
    teacher = fit(REFERENCE_CNN, version, store=store, config=MNIST1D_TRAINING, checkpoint_path=False,
                  progress=False).model
    transfer = torch.from_numpy(generate_mnist1d(seed=1042)["x"]).float()  # new signals; their labels are not used
    study = distillation_study(SMALL_CNN, teacher, version, store, MNIST1D_TRAINING, seeds=(0, 1, 2),
                               temperature=4.0, alpha=0.9, unlabelled=transfer)
    print("### Distillation on MNIST-1D: CNN (25 channels) teacher, CNN (8 channels) student, T=4, alpha=0.9\n")
    print(study._repr_markdown_())
    print(f"\ndistilled (with transfer set) - alone: {study.gain:+.2f} points (target >= 0)\n")


def prune_and_report(title: str, model, version, store: Store, test, fine_tune) -> None:
    before = measure(model, test, title)
    pruned = prune_to_ratio(model, test.inputs, ratio=0.5)
    after_pruning = measure(pruned, test, "pruned to 50% of parameters")
    tuned = fit(pruned, version, store=store, config=fine_tune, checkpoint_path=False, progress=False).model
    after_tuning = measure(tuned, test, "pruned + fine-tuned")
    print(f"### Structured pruning of the {title} to 50% of its parameters\n")
    print(ModelComparison((before, after_pruning, after_tuning))._repr_markdown_())
    print(f"\naccuracy change after fine-tuning: {after_tuning.accuracy - before.accuracy:+.2f} points "
          "(target >= -1)\n")


def run_pruning(store: Store) -> None:
    "The over-parameterised timm ResNet-18 on digits, and the tiny (5,210-parameter) MNIST-1D CNN."
    digits = import_digits(store)
    row = RECIPES["digits"].rows[0]
    _, _, digits_test = training_splits(digits, store, row.config)
    resnet = fit(row.model, digits, store=store, config=row.config, checkpoint_path=False, progress=False).model
    prune_and_report("digits ResNet-18 (timm)", resnet, digits, store, digits_test,
                     replace(row.config, epochs=5, lr=5e-4, warmup_steps=0))
    version = import_mnist1d(store)
    _, _, test = training_splits(version, store, MNIST1D_TRAINING)
    cnn = fit(REFERENCE_CNN, version, store=store, config=MNIST1D_TRAINING, checkpoint_path=False, progress=False).model
    prune_and_report("MNIST-1D CNN", cnn, version, store, test, MNIST1D_TRAINING)


def busy_process() -> subprocess.Popen:
    "Another program holding one core, as on a laptop that is never idle."
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_threads(store: Store, steps: int) -> None:
    "The MNIST-1D table (quick mode) quiet and beside a busy process, torch's default threads vs fit's choice."
    recipe = RECIPES["mnist1d"]
    quick = replace(recipe, seeds=(0,), rows=tuple(
        replace(row, config=replace(row.config, max_steps=steps, eval_every_steps=steps)) for row in recipe.rows))
    import_mnist1d(store)
    every = available_threads()
    policies = {f"torch default ({torch.get_num_threads()} threads)": torch.get_num_threads(), "fit's choice": None}
    seconds: dict[tuple[str, str], float] = {}
    for condition in ("quiet", "busy"):
        neighbour = busy_process() if condition == "busy" else None
        try:
            for policy, threads in policies.items():
                seconds[policy, condition] = reproduce(quick, store=store, threads=threads, progress=False).seconds
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    print(f"### MNIST-1D table, quick mode ({steps} steps per row, 1 seed), {every} cores\n")
    print("| threads | quiet (s) | one busy process (s) | busy / quiet |\n| --- | ---: | ---: | ---: |")
    for policy in policies:
        quiet, busy = seconds[policy, "quiet"], seconds[policy, "busy"]
        print(f"| {policy} | {quiet:.1f} | {busy:.1f} | {busy / quiet:.2f}x |")
    ratio = seconds["fit's choice", "busy"] / seconds["fit's choice", "quiet"]
    print(f"\nfit's choice, busy / quiet: {ratio:.2f}x (target <= 2.5x): {'met' if ratio <= 2.5 else '**not met**'}\n")


def draw_shapes_folder(root: Path, side: int, per_class: int = 60, seed: int = 0) -> Path:
    "A folder of circles, squares and triangles (dark on light, random place, size and noise), one sub-folder each."
    rng = np.random.default_rng(seed)
    for shape in ("circle", "square", "triangle"):
        (root / shape).mkdir(parents=True)
        for index in range(per_class):
            image = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(150, 256, 3)))
            draw, colour = ImageDraw.Draw(image), tuple(int(v) for v in rng.integers(0, 100, 3))
            radius = rng.uniform(0.15, 0.35) * side
            x, y = rng.uniform(radius, side - radius, 2)
            if shape == "circle":
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
            elif shape == "square":
                draw.rectangle([x - radius, y - radius, x + radius, y + radius], fill=colour)
            else:
                draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=colour)
            noisy = np.asarray(image).astype(np.int16) + rng.normal(0, 12, (side, side, 3)).astype(np.int16)
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(root / shape / f"{index}.png")
    return root


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    "95% Wilson score interval (%) for an accuracy of correct/total."
    if total == 0:
        return (0.0, 100.0)
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (100 * (centre - half), 100 * (centre + half))


def all_items(version, store: Store) -> Split:
    "Every item of a version, whatever its split."
    parts = [load_split(version, split, store) for split in version.split_counts()]
    return Split(torch.cat([p.inputs for p in parts]), torch.cat([p.targets for p in parts]),
                 [sha for p in parts for sha in p.shas])


def run_stem(store: Store, folder: Path, sides: tuple[int, ...], per_class: int, held_out: int) -> None:
    """ResNet-18 on a drawn-shapes folder: fit(name, version) with every default against the previous defaults
    (TrainConfig(), the baseline) and against the other stem, scored on the folder's test split and on a larger
    held-out folder drawn the same way (another seed)."""
    print(f"### ResNet-18 on a 3-class shapes folder ({per_class} per class), scored on its test split and on "
          f"{3 * held_out} more drawn images (SMALL_INPUT_MAX_SIDE = {SMALL_INPUT_MAX_SIDE}, load {load_average()})\n")
    print("| size | run | stem | test split (%) | held-out (%) [95% CI] | epochs | seconds | time / baseline | load |\n"
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for side in sides:
        version = import_folder(draw_shapes_folder(folder / f"shapes{side}", side, per_class), store=store)
        extra = all_items(import_folder(draw_shapes_folder(folder / f"more{side}", side, held_out, seed=1),
                                        store=store), store)
        test_items = version.split_counts()["test"]
        fits_choice = "small-input" if side <= SMALL_INPUT_MAX_SIDE else "standard"
        for stem in (fits_choice, "standard" if fits_choice == "small-input" else "small-input"):
            model = "resnet18" if stem == fits_choice else timm_spec("resnet18", 3, small_input=stem == "small-input")
            baseline = None
            for label, config in (("previous defaults: TrainConfig() (baseline)", TrainConfig()),
                                  ("every default" + (": fit(name, version)" if stem == fits_choice else ""), None)):
                result = fit(model, version, store=store, config=config, checkpoint_path=False, progress=False)
                with torch.no_grad():
                    correct = int((result.model(extra.inputs).argmax(-1) == extra.targets).sum())
                low, high = wilson_interval(correct, len(extra))
                baseline = baseline or result.seconds
                print(f"| {side}x{side} | {label} | {stem} | {result.test_accuracy:.1f} ({test_items}) "
                      f"| {100 * correct / len(extra):.1f} [{low:.1f}, {high:.1f}] ({len(extra)}) "
                      f"| {result.history[-1]['epoch']:g} | {result.seconds:.0f} | {result.seconds / baseline:.2f}x | {load_average()} |",
                      flush=True)
    print()


def _default_row(job: tuple[str, str, str, str, str, int | None]) -> dict:
    "One fit of the `default` part, in its own process: the result's figures and the held-out score."
    database, blobs, version_id, extra_id, label, samples_seen = job
    os.environ["FSML_THREADS"] = "1"
    from fsml_nb.train import config_for_data

    with Store(database, blobs) as store:
        version = store.version(version_id)
        extra = all_items(store.version(extra_id), store)
        config = None
        if samples_seen is not None:
            train, _, _ = training_splits(version, store, TrainConfig())
            config = config_for_data(len(train), tuple(train.inputs.shape[1:]), samples_seen=samples_seen)
        started = time.perf_counter()
        result = fit("resnet18", version, store=store, config=config, checkpoint_path=False, progress=False)
        wall = time.perf_counter() - started
        with torch.no_grad():
            correct = int((result.model(extra.inputs).argmax(-1) == extra.targets).sum())
    estimate = next((note for note in result.notes if note.startswith("expect about")), "-")
    return {"label": label, "test": result.test_accuracy, "correct": correct, "total": len(extra), "wall": wall,
            "epochs": result.history[-1]["epoch"], "steps": result.history[-1]["step"], "planned": result.config.epochs,
            "estimate": estimate, "load": load_average()}


def run_default(folder: Path, per_class: int, held_out: int) -> None:
    "fit(name, version) with every default against the previous default budget, side by side on the same machine."
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    database, blobs = f"sqlite:///{folder}/default.db", str(folder / "default-blobs")
    with Store(database, blobs) as store:
        version = import_folder(draw_shapes_folder(folder / "default32", 32, per_class), store=store)
        extra = import_folder(draw_shapes_folder(folder / "default-more32", 32, held_out, seed=1), store=store)
    print(f"### fit(\"resnet18\", version) on the 32x32 shapes folder ({per_class} per class), previous default as "
          f"baseline; held-out: {3 * held_out} more images (uptime: {os.popen('uptime').read().strip()})\n")
    jobs = [(database, blobs, version.id, extra.id, "previous default: samples_seen=15_000 (baseline)", 15_000),
            (database, blobs, version.id, extra.id, "fit(name, version): every default", None)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        rows = list(pool.map(_default_row, jobs))
    print("| run | test split (%) | held-out (%) [95% CI] | epochs run / planned | steps | wall (s) | time / baseline "
          "| fit's estimate after its first steps | load at the end |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        low, high = wilson_interval(row["correct"], row["total"])
        print(f"| {row['label']} | {row['test']:.1f} | {100 * row['correct'] / row['total']:.1f} [{low:.1f}, {high:.1f}] "
              f"({row['total']}) | {row['epochs']:g} / {row['planned']} | {row['steps']} | {row['wall']:.0f} "
              f"| {row['wall'] / rows[0]['wall']:.2f}x | {row['estimate']} | {row['load']} |")
    print(f"\n(uptime: {os.popen('uptime').read().strip()})\n")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="mnist1d,digits,distill,prune")
    parser.add_argument("--out", type=Path, default=None, help="also save each recipe's report.md/json/png here")
    parser.add_argument("--steps", type=int, default=600, help="steps per row in the threads benchmark's quick mode")
    parser.add_argument("--sides", default="32", help="image sides for the stem benchmark, e.g. 32,64")
    parser.add_argument("--per-class", type=int, default=60, help="images per class in the stem benchmark's folder")
    parser.add_argument("--held-out", type=int, default=200, help="more images per class to score the stem runs on")
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
            elif part == "threads":
                run_threads(store, args.steps)
            elif part == "default":
                run_default(Path(tmp), args.per_class, args.held_out)
            elif part == "stem":
                run_stem(store, Path(tmp), tuple(int(side) for side in args.sides.split(",")), args.per_class,
                         args.held_out)
            else:
                raise SystemExit(f"unknown part {part!r}")
            print(f"({part}: {time.perf_counter() - started:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
