"""Benchmark: what running a step as a papermill notebook costs over calling its code in process.

    python bench/pipeline.py [--repeats 3]

Rows:
1. a trivial step (sum a list) and 2. a small training step (`fit` of a small MLP on digits for 200
   steps), each three ways: the code called in this process (the baseline: torch and fsml_nb are
   already imported here); one papermill call in a kernel started for it (`execute_step`: kernel
   start, the imports, parameter injection, executed copy and HTML kept, outputs recorded); and as
   a step of a pipeline run, where the runner started the step's kernel and its imports while the
   step before it ran (`KernelPool`: kernels for the first two steps to run start when the run is planned,
   then two ahead of the running step). The pipeline figure is what the step adds to the run: from
   the end of the step before it to its own end (planning, cache lookup, the run, the records).
   The same after a step that sleeps 3 s, about as long as the digits pipeline's import step, long
   enough to hide the kernel's start. A resumed run (the trivial step cached) starts the train step's kernel
   when it plans the run, a few milliseconds before the step: nothing to hide its start behind.
3. a whole run of the two-step pipeline (trivial step, then the train step): its overhead per step
   against calling both steps in process (the kernels' shutdown at the end of the run included);
4. a cached re-run of a three-step pipeline: no kernel starts at all;
5. the same three trivial steps on the queue executor, one `pipeline_worker` (SQLite broker): what the second and
   third steps add to the run (a worker keeps a kernel started for its next job).
6. with the kernel keeper (FSML_KERNEL_KEEPER=on; rows 1-5 run with it off): the resumed train step, the train
   step right after the trivial step, and the whole two-step run, each run once the keeper holds its two kernels
   (started and with torch and fsml_nb.train imported by an earlier run's request), as a run an hour after
   the last one finds them. The keeper's kernels claimed, the run starts none of its own.
The overhead per step is the difference; the target is <= 1.5 s.

What the in-process baseline includes: this process imported torch and fsml_nb.train and ran `fit` before the
timed calls, so "in process" is the step's work alone. A runner calling the step in process for the first time
(`fsml pipeline run` imports fsml_nb.pipeline, not torch) would pay the step's imports and first-use costs too:
the column "first call in process" times the step's code in a fresh interpreter that has imported only
fsml_nb.pipeline (as the runner has), and the last column is the overhead against it. Both are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import select

from fsml_nb.db import pipeline_steps, reading
from fsml_nb.pipeline import (execute_step, keeper_folder, load_pipeline, pipeline_worker, run_pipeline,
                               stop_keepers)
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


def step_spans(store: Store, run_id: str) -> dict[str, float]:
    "Seconds each step of a run added to it: from the previous step's record (or the run's start) to its own."
    with reading(store.engine) as connection:
        rows = connection.execute(select(pipeline_steps.c.step, pipeline_steps.c.finished_at)
                                  .where(pipeline_steps.c.run_id == run_id).order_by(pipeline_steps.c.id)).all()
    return {step: (finished - before).total_seconds() for (step, finished), (_, before) in zip(rows[1:], rows[:-1], strict=True)}


def first_call(code: str, parameters: dict, repeats: int) -> float:
    "Seconds of the step's code called once in a fresh interpreter that has imported what the runner imports."
    script = (f"import time\nimport fsml_nb.pipeline\nstart = time.perf_counter()\nexec({code!r}, {parameters!r})\n"
              "print('seconds', time.perf_counter() - start)")
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        times.append(float(out.split("seconds")[-1]))
    return min(times)


def queue_spans(store: Store, spec, broker_url: str, repeats: int) -> float:
    "The best span of a non-first step of the pipeline run on the queue executor by one worker thread."
    stop = threading.Event()
    worker = threading.Thread(target=pipeline_worker, kwargs={"store": store, "broker_url": broker_url, "stop": stop,
                                                             "queue": "bench.pipeline"})
    worker.start()
    try:
        best = float("inf")
        for _ in range(repeats):
            run = run_pipeline(spec, store=store, progress=False, executor="queue", broker_url=broker_url,
                               queue_name="bench.pipeline", force=[step.name for step in spec.steps])
            best = min(best, *step_spans(store, run.id).values())
        return best
    finally:
        stop.set()
        worker.join()


def keeper_full(modules: tuple[str, ...] = ("torch", "fsml_nb.train"), count: int = 2, seconds: float = 600) -> None:
    "Wait until the keeper holds `count` ready kernels that imported `modules` (and its claimed kernels are gone)."
    folder, deadline = keeper_folder(), time.monotonic() + seconds
    while True:
        infos = []
        for path in folder.glob("kernel-*.ready.json"):
            try:
                infos.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        if len(infos) >= count and all(set(modules) <= set(info["modules"]) for info in infos):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the keeper did not get {count} kernels ready within {seconds:.0f} s: see {folder}")
        time.sleep(0.2)


def keeper_runs(store: Store, two, digits_id: str, repeats: int) -> dict[str, list]:
    "Runs of the two-step pipeline taking the keeper's kernels: the train step resumed, and both steps."
    os.environ["FSML_KERNEL_KEEPER"] = "on"
    runs: dict[str, list] = {"resume": [], "two": []}
    try:
        run_pipeline(two, {"dataset_version": digits_id}, store=store, progress=False, force=["train"])  # starts it
        for _ in range(repeats):
            for name, force in (("resume", ["train"]), ("two", ["trivial", "train"])):
                keeper_full()
                run = run_pipeline(two, {"dataset_version": digits_id}, store=store, progress=False, force=force)
                runs[name].append((run.seconds, step_spans(store, run.id)))
        return runs
    finally:
        stop_keepers()
        os.environ["FSML_KERNEL_KEEPER"] = "off"


def main() -> None:
    from fsml_nb.data import import_digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["FSML_HOME"] = str(folder / "home")
        os.environ["FSML_KERNEL_KEEPER"] = "off"  # rows 1-5: each run starts its own kernels
        load_before = os.getloadavg()
        store = Store()
        digits = import_digits(store)
        notebook(folder / "trivial.ipynb", "size: int = 1000", TRIVIAL)
        notebook(folder / "train.ipynb", "dataset_version: str = ''\nsteps: int = 200", TRAIN)
        (folder / "three.toml").write_text('\n'.join(
            f'[[steps]]\nname = "s{index}"\nnotebook = "trivial.ipynb"\n' for index in range(3)))
        (folder / "two.toml").write_text('[[steps]]\nname = "trivial"\nnotebook = "trivial.ipynb"\n'
                                         '[[steps]]\nname = "train"\nnotebook = "train.ipynb"\nafter = ["trivial"]\n')
        notebook(folder / "pause.ipynb", "seconds: float = 3.0", "import time\ntime.sleep(seconds)")
        (folder / "paused.toml").write_text('[[steps]]\nname = "pause"\nnotebook = "pause.ipynb"\n'
                                            '[[steps]]\nname = "train"\nnotebook = "train.ipynb"\nafter = ["pause"]\n')
        three, two = load_pipeline(folder / "three.toml"), load_pipeline(folder / "two.toml")
        paused = load_pipeline(folder / "paused.toml")
        trivial_step, train_step = two.steps
        train_params = {"dataset_version": digits.id, "steps": 200}
        trivial_in = min(timed(lambda: exec(TRIVIAL, {"size": 1000})) for _ in range(args.repeats))
        trivial_first = first_call(TRIVIAL, {"size": 1000}, args.repeats)
        train_first = first_call(TRAIN, dict(train_params), args.repeats)
        trivial_cold = min(timed(lambda: execute_step(store, trivial_step, {"size": 1000}, folder))
                           for _ in range(args.repeats))
        train_in = min(timed(lambda: exec(TRAIN, dict(train_params))) for _ in range(args.repeats))
        train_cold = min(timed(lambda: execute_step(store, train_step, train_params, folder))
                         for _ in range(args.repeats))
        runs = {"three": [], "two": [], "resume": [], "paused": []}
        for _ in range(args.repeats):
            for name, spec, force in (("three", three, ["s0", "s1", "s2"]), ("two", two, ["trivial", "train"]),
                                      ("resume", two, ["train"]), ("paused", paused, ["pause", "train"])):
                run = run_pipeline(spec, {"dataset_version": digits.id} if spec is not three else {}, store=store,
                                   progress=False, force=force)
                runs[name].append((run.seconds, step_spans(store, run.id)))
        trivial_warm = min(min(spans["s1"], spans["s2"]) for _, spans in runs["three"])
        train_warm = min(spans["train"] for _, spans in runs["two"])
        train_resumed = min(spans["train"] for _, spans in runs["resume"])
        train_paused = min(spans["train"] for _, spans in runs["paused"])
        two_run = min(seconds for seconds, _ in runs["two"])
        run_pipeline(three, store=store, progress=False)
        cached = min(timed(lambda: run_pipeline(three, store=store, progress=False)) for _ in range(args.repeats))
        queued = queue_spans(store, three, f"sqlite:///{folder}/queue.db", args.repeats)
        kept = keeper_runs(store, two, digits.id, args.repeats)
        kept_resumed = min(spans["train"] for _, spans in kept["resume"])
        kept_train = min(spans["train"] for _, spans in kept["two"])
        kept_two = min(seconds for seconds, _ in kept["two"])
        store.close()
    print(f"| step (best of {args.repeats}) | in process (s) | first call in process (s) | papermill, own kernel (s) "
          "| overhead (s) | in a pipeline run (s) | overhead (s) | overhead vs first call (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, inside, first, cold, warm in (
            ("trivial step", trivial_in, trivial_first, trivial_cold, trivial_warm),
            ("train step (200 steps of an MLP)", train_in, train_first, train_cold, train_warm)):
        print(f"| {name} | {inside:.2f} | {first:.2f} | {cold:.2f} | {cold - inside:.2f} | {warm:.2f} "
              f"| {warm - inside:.2f} | {warm - first:.2f} |")
    print(f"| train step after a 3 s step (digits' import step: 3-6 s) | {train_in:.2f} | {train_first:.2f} | | "
          f"| {train_paused:.2f} | {train_paused - train_in:.2f} | {train_paused - train_first:.2f} |")
    print(f"| train step, resumed (the step before it cached: nothing to start its kernel behind) | {train_in:.2f} "
          f"| {train_first:.2f} | | | {train_resumed:.2f} | {train_resumed - train_in:.2f} "
          f"| {train_resumed - train_first:.2f} |")
    print(f"| whole run: trivial step then train step, per step | {(trivial_in + train_in) / 2:.2f} "
          f"| {(trivial_first + train_first) / 2:.2f} | | | {two_run / 2:.2f} | {(two_run - trivial_in - train_in) / 2:.2f} "
          f"| {(two_run - trivial_first - train_first) / 2:.2f} |")
    print(f"| cached re-run of a 3-step pipeline | | | | | {cached:.2f} | | |")
    print(f"| trivial step on the queue executor, one worker (2nd/3rd step) | {trivial_in:.2f} | {trivial_first:.2f} "
          f"| | | {queued:.2f} | {queued - trivial_in:.2f} | {queued - trivial_first:.2f} |")
    for name, seconds in (("train step, resumed, on a keeper's kernel", kept_resumed),
                          ("train step right after the trivial step, keeper's kernels", kept_train)):
        print(f"| {name} | {train_in:.2f} | {train_first:.2f} | | | {seconds:.2f} | {seconds - train_in:.2f} "
              f"| {seconds - train_first:.2f} |")
    print(f"| whole run with the keeper: trivial step then train step, per step | {(trivial_in + train_in) / 2:.2f} "
          f"| {(trivial_first + train_first) / 2:.2f} | | | {kept_two / 2:.2f} | {(kept_two - trivial_in - train_in) / 2:.2f} "
          f"| {(kept_two - trivial_first - train_first) / 2:.2f} |")
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} at the start, "
          f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} at the end; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
