"""Benchmark: what running a step as a papermill notebook costs over calling its code in process.

    python bench/pipeline.py [--repeats 3]

Rows:
1. a trivial step (sum a list): papermill (kernel start, parameter injection, executed copy kept,
   outputs recorded) vs the same code called in this process;
2. a small training step (`fit` of a small MLP on digits for 200 steps): the notebook pays the kernel
   start and the imports of torch and fsml_nb again, which an in-process call has already paid;
3. a cached re-run of a three-step pipeline: no kernel starts at all.
The overhead per step is the difference; the target is <= 1.5 s.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fsml_nb.pipeline import execute_step, load_pipeline, run_pipeline
from fsml_nb.store import Store


def notebook(path: Path, parameters: str, body: str) -> Path:
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": parameters, "outputs": [],
              "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": body, "outputs": [], "execution_count": None}]
    path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}))
    return path


TRIVIAL = "from fsml_nb.pipeline import record_outputs\nrecord_outputs(total=sum(range(size)))"
TRAIN = """from torch import nn
from fsml_nb.pipeline import record_outputs
from fsml_nb.store import Store
from fsml_nb.train import TrainConfig, fit
with Store() as store:
    network = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    result = fit(network, dataset_version, store=store, config=TrainConfig(max_steps=steps, val_fraction=0.0))
record_outputs(accuracy=result.test["accuracy"] if result.test else None)"""


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    import os

    from fsml_nb.data import import_digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["FSML_HOME"] = str(folder / "home")
        store = Store()
        digits = import_digits(store)
        notebook(folder / "trivial.ipynb", "size: int = 1000", TRIVIAL)
        train = notebook(folder / "train.ipynb", "dataset_version: str = ''\nsteps: int = 200", TRAIN)
        (folder / "three.toml").write_text('\n'.join(
            f'[[steps]]\nname = "s{index}"\nnotebook = "trivial.ipynb"\n' for index in range(3)))
        spec = load_pipeline(folder / "three.toml")
        step = spec.steps[0]
        rows = []
        in_process = min(timed(lambda: exec(TRIVIAL, {"size": 1000})) for _ in range(args.repeats))
        papermill = min(timed(lambda: execute_step(store, step, {"size": 1000}, folder)) for _ in range(args.repeats))
        rows.append(("trivial step", in_process, papermill))
        exec_globals = {"dataset_version": digits.id, "steps": 200}
        in_process = min(timed(lambda: exec(TRAIN, dict(exec_globals))) for _ in range(args.repeats))
        train_step = type(step)("train", train)
        papermill = min(timed(lambda: execute_step(store, train_step, exec_globals, folder)) for _ in range(args.repeats))
        rows.append(("train step (200 steps of an MLP)", in_process, papermill))
        run_pipeline(spec, store=store, progress=False)
        cached = min(timed(lambda: run_pipeline(spec, store=store, progress=False)) for _ in range(args.repeats))
        store.close()
    print(f"| step (best of {args.repeats}) | in process (s) | papermill (s) | overhead (s) |")
    print("| --- | ---: | ---: | ---: |")
    for name, inside, notebook_time in rows:
        print(f"| {name} | {inside:.2f} | {notebook_time:.2f} | {notebook_time - inside:.2f} |")
    print(f"| cached re-run of a 3-step pipeline | | {cached:.2f} | |")


if __name__ == "__main__":
    main()
