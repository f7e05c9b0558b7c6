"""Benchmark: the model registry against plain fsspec copies, and `alias_at` over a long history.

    python bench/registry.py [--hidden 3500] [--repeats 3] [--promotions 10000] [--code OTHER_CHECKOUT]

Trains an MNIST-1D MLP whose weights are about 50 MB (`--hidden 3500`: 12.4 M parameters) for a
few steps, exports it (ONNX FP32, INT8 dynamic and static), then measures, in the same run:
- register (archive every file as a blob, each hashed as it is copied and compared with the hashes
  export recorded, plus code, environment and rows; nothing is run) vs copying the same files
  (export folder + checkpoint) with fsspec into a fresh folder: target <= 1.5x;
- pull (every blob re-hashed, written to a temporary folder, renamed) vs copying the same blobs
  with fsspec: target <= 1.5x; then `load_pulled` of the pulled folder (every file re-hashed in place,
  no copy), against the same blob copy;
- `alias_at` over a log of 10,000 promotions, on SQLite and on PostgreSQL when it answers:
  target <= 10 ms (median), with `promote` itself for scale;
- with `--mlflow-python` (the Python of a separate virtual environment that has MLflow, or
  FSML_BENCH_MLFLOW_PYTHON): MLflow's registry on the same files, SQLite backend, side by side
  (register, set alias, resolve alias, download), run by bench/registry_mlflow.py.
- the floor any registry that SHA-256-hashes every byte it stores has on this machine, measured in
  each repeat right after the plain copies, from the page cache (the files were just copied), each
  as a ratio to the same plain copy as the row it stands under:
  - "SHA-256 of every file, one core": hashlib.file_digest of each file, one after another, on
    one thread; only hashing (no copy, no write, no other work);
  - "SHA-256 of the largest file alone": the same for the largest file (the checkpoint); one file's
    SHA-256 is a chain that cannot be split across cores, so no copy that hashes can end sooner;
  - "ideal overlap bound" = max(largest file's hash, (all hashes + plain copy) / usable CPUs): the
    copy and every hash spread perfectly over the CPUs this process may run on
    (os.sched_getaffinity), with no other work, no read-back and no scheduling loss. Computed per
    repeat from that repeat's three timings, then the median is taken. It is a lower bound, not
    a prediction: other jobs on a shared machine take CPUs that the formula counts as ours;
  the same three for pull's files (the blobs, which add the code archive, environment and golden
  files), against the plain copy of the blobs.
- with `--code OTHER_CHECKOUT`: that checkout's fsml_nb/registry.py (the rest of fsml_nb is this
  tree's) registers and pulls in the same repeats, on its own fresh store, the two trees taking
  turns going first: a before/after in one run, against the same plain copies and floors.
Each timing is the median of `--repeats` runs, each on a fresh store and folder; each repeat times the
plain copy and the registry's operation back to back and deletes what it wrote before the next one (so
dirty pages never pile up into a disk writeback that lands on a later timing). The first register of a
process also makes the code archive and the environment snapshot (cached after): it is timed on its own.
Each run's CPU seconds (user + system of every thread of this process, time.process_time) are printed too, as a ratio to
the CPU of the plain copy plus every hash: a shared machine moves wall times far more than CPU times.
The register and pull rows are followed by where their time goes (median seconds per phase, from the
phases the registry logs at DEBUG), and the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

import fsspec

from fsml_nb.core import utc_now
from fsml_nb.data import import_mnist1d
from fsml_nb.db import model_aliases, model_promotions, model_versions, registered_models, transaction
from fsml_nb.export import export_checkpoint
from fsml_nb.registry import MODEL_FORMAT, ModelRegistry, manifest_bytes
from fsml_nb.store import Store, sha256_hex
import fsml_nb.repro  # noqa: F401  (registers the MNIST-1D architectures)
from fsml_nb.train import TrainConfig, fit, registered_spec

PG_URL = os.environ.get("FSML_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SIDE_BY_SIDE: dict[str, float] = {}  # fsml_nb's timings of the operations MLflow is measured on


def median_seconds(run: Callable[[int], object], repeats: int) -> float:
    times = []
    for repeat in range(repeats):
        started = time.perf_counter()
        run(repeat)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def usable_cpus() -> int:
    "The CPUs this process may run on (its affinity), else os.cpu_count()."
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> str:
    return f"{' '.join(f'{load:.1f}' for load in os.getloadavg())} on {os.cpu_count()} CPUs ({usable_cpus()} usable)"


def hash_seconds(files: dict[str, Path], cpu_label: str) -> tuple[float, float]:
    "Seconds to SHA-256 every file, one after another on this thread, and of those the largest file's."
    largest = max(files.values(), key=lambda path: path.stat().st_size)
    total = largest_seconds = 0.0
    cpu_started = cpu_seconds()
    for path in files.values():
        started = time.perf_counter()
        with open(path, "rb") as handle:
            hashlib.file_digest(handle, "sha256")
        seconds = time.perf_counter() - started
        total += seconds
        if path == largest:
            largest_seconds = seconds
    CPU.setdefault(cpu_label, []).append(cpu_seconds() - cpu_started)
    return total, largest_seconds


def overlap_bound(all_hashes: float, largest_hash: float, copy: float) -> float:
    "The least time a copy that hashes every byte can take: the largest hash, or all the work spread over the CPUs."
    return max(largest_hash, (all_hashes + copy) / usable_cpus())


def fsspec_copy(files: dict[str, Path], destination: Path) -> None:
    "Copy files (relative name -> path) into a new folder with fsspec, as a plain file-server copy would."
    filesystem = fsspec.filesystem("file")
    for relative, path in files.items():
        target = destination / relative
        filesystem.makedirs(str(target.parent), exist_ok=True)
        filesystem.cp_file(str(path), str(target))


def make_export(tmp: Path, hidden: int) -> tuple[Path, Path]:
    with Store(f"sqlite:///{tmp}/source.db", str(tmp / "source-blobs")) as store:
        version = import_mnist1d(store, num_samples=1000)
        checkpoint = tmp / "big.safetensors"
        fit(registered_spec("mnist1d-mlp", hidden=hidden), version, store=store,
            progress=False, checkpoint_path=checkpoint,
            config=TrainConfig(max_steps=3, batch_size=100, optimizer="adam", lr=1e-3, weight_decay=0,
                               schedule="constant", val_fraction=0))
        export_checkpoint(checkpoint, tmp / "export", version, store=store, calibration_items=64)
    return tmp / "export", checkpoint


class PhaseLog(logging.Handler):
    "Collects the phases `register` and `pull` log at DEBUG (logger fsml_nb.registry)."

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.calls: list[tuple[str, dict[str, float]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "phases"):
            self.calls.append((record.getMessage().split()[0], record.phases))

    def __enter__(self) -> PhaseLog:
        logger = logging.getLogger("fsml_nb.registry")
        self.level_before, self.propagate_before = logger.level, logger.propagate
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # collected here, not printed
        logger.addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        logger = logging.getLogger("fsml_nb.registry")
        logger.removeHandler(self)
        logger.setLevel(self.level_before)
        logger.propagate = self.propagate_before

    def median(self, call: str) -> str:
        "Median seconds per phase of every logged `call` (registered or pulled)."
        runs = [phases for name, phases in self.calls if name == call]
        if not runs:
            return "(no phases logged)"
        return ", ".join(f"{phase} {statistics.median(run.get(phase, 0.0) for run in runs) * 1000:.1f} ms"
                         for phase in runs[0])


def fresh_store(tmp: Path, label: str) -> Store:
    store = Store(f"sqlite:///{tmp}/{label}.db", str(tmp / f"{label}-blobs"))
    import_mnist1d(store, num_samples=1000)
    return store


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system, every thread of this process) of the timed runs, by label


def cpu_seconds() -> float:
    return time.process_time()  # every thread of this process, user + system


def timed(run: Callable[[], object], cpu_label: str | None = None) -> float:
    "Wall seconds of `run()`; its CPU seconds are kept under `cpu_label` in CPU."
    started, cpu_started = time.perf_counter(), cpu_seconds()
    run()
    seconds = time.perf_counter() - started
    if cpu_label:
        CPU.setdefault(cpu_label, []).append(cpu_seconds() - cpu_started)
    return seconds


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cpu_line(trees: dict[str, type]) -> str:
    "Median CPU seconds of each timed run: steadier than wall time on a shared machine."
    def cpu(label: str) -> float:
        return statistics.median(CPU[label])

    parts = [f"plain copy {cpu('copy'):.3f} s, SHA-256 of every file {cpu('hash files'):.3f} s"]
    for tree in trees:
        parts.append(f"register ({tree}) {cpu(f'register {tree}'):.3f} s = "
                     f"{cpu(f'register {tree}') / (cpu('copy') + cpu('hash files')):.2f}x (copy + hashes)")
    parts.append(f"blob copy {cpu('blob copy'):.3f} s, SHA-256 of every blob {cpu('hash blobs'):.3f} s")
    for tree in trees:
        parts.append(f"pull ({tree}) {cpu(f'pull {tree}'):.3f} s = "
                     f"{cpu(f'pull {tree}') / (cpu('blob copy') + cpu('hash blobs')):.2f}x (copy + hashes)")
    for tree in trees:
        parts.append(f"load_pulled ({tree}) {cpu(f'load_pulled {tree}'):.3f} s = "
                     f"{cpu(f'load_pulled {tree}') / cpu('hash blobs'):.2f}x (hashes)")
    return "CPU seconds (user + system of this process, medians): " + "; ".join(parts)


def compared_registry(path: Path) -> type:
    "`ModelRegistry` of another tree's registry.py (`--code`), loaded beside this tree's in the fsml_nb package."
    source = path / "fsml_nb" / "registry.py" if path.is_dir() else path
    if not source.is_file():
        raise SystemExit(f"--code {path}: no fsml_nb/registry.py there")
    name = "fsml_nb._registry_compared"
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "fsml_nb"
    sys.modules[name] = module
    spec.loader.exec_module(module)
    module.log = logging.getLogger("fsml_nb.registry_compared")  # its phases stay out of this tree's medians
    return module.ModelRegistry


def bench_register_and_pull(tmp: Path, export: Path, checkpoint: Path, repeats: int,
                            compared: tuple[str, type] | None = None) -> tuple[list[tuple], list[str]]:
    files = {path.relative_to(export).as_posix(): path for path in export.rglob("*") if path.is_file()}
    files["checkpoint.safetensors"] = checkpoint
    size = sum(path.stat().st_size for path in files.values())
    trees = {"this tree": ModelRegistry, **dict([compared] if compared else [])}
    copies, blob_copies = [], []
    registers: dict[str, list[float]] = {tree: [] for tree in trees}
    pulls: dict[str, list[float]] = {tree: [] for tree in trees}
    loads: dict[str, list[float]] = {tree: [] for tree in trees}
    load_pulled = {tree: sys.modules[registry_class.__module__].load_pulled for tree, registry_class in trees.items()}
    floors: dict[str, list[float]] = {key: [] for key in ("all", "largest", "bound", "blob all", "blob largest",
                                                          "blob bound")}
    with PhaseLog() as phase_log:
        with fresh_store(tmp, "first") as store:  # the first register of this process makes code archive + environment
            first_copy = timed(lambda: fsspec_copy(files, tmp / "copy-first"))
            first = ModelRegistry(store)
            first_register = timed(lambda: first.register(export, "bench", reason="benchmark"))
            SIDE_BY_SIDE["set alias"] = median_seconds(lambda _: first.promote("bench", 1, reason="bench"), repeats)
            SIDE_BY_SIDE["resolve alias"] = median_seconds(lambda _: first.version("bench@champion"), 50)
            if compared:  # its own first register (code archive, environment) is not timed
                compared[1](store).register(export, "bench-compared", reason="benchmark")
        remove(tmp / "copy-first")
        remove(tmp / "first-blobs")
        phase_log.calls.clear()
        for repeat in range(repeats):
            copies.append(timed(lambda: fsspec_copy(files, tmp / "copy"), "copy"))
            remove(tmp / "copy")
            all_hashes, largest_hash = hash_seconds(files, "hash files")
            floors["all"].append(all_hashes)
            floors["largest"].append(largest_hash)
            floors["bound"].append(overlap_bound(all_hashes, largest_hash, copies[-1]))
            order = list(trees) if repeat % 2 == 0 else list(trees)[::-1]  # neither tree always goes first
            for turn, tree in enumerate(order):
                label = f"register{repeat}-{turn}"
                store = fresh_store(tmp, label)
                registry = trees[tree](store)
                registers[tree].append(timed(partial(registry.register, export, "bench", reason="benchmark"),
                                             f"register {tree}"))
                version = registry.version("bench:1")
                archive_size = sum(entry["size"] for entry in version.manifest["files"].values())
                if turn == 0:
                    blob_files = {relative: Path(store.blobs.path(sha)) for relative, sha in version.files.items()}
                    blob_copies.append(timed(partial(fsspec_copy, blob_files, tmp / "blobcopy"), "blob copy"))
                    remove(tmp / "blobcopy")
                    all_hashes, largest_hash = hash_seconds(blob_files, "hash blobs")
                    floors["blob all"].append(all_hashes)
                    floors["blob largest"].append(largest_hash)
                    floors["blob bound"].append(overlap_bound(all_hashes, largest_hash, blob_copies[-1]))
                pulls[tree].append(timed(partial(registry.pull, "bench:1", tmp / "pull"), f"pull {tree}"))
                loads[tree].append(timed(partial(load_pulled[tree], tmp / "pull"), f"load_pulled {tree}"))
                remove(tmp / "pull")
                store.close()
                remove(tmp / f"{label}-blobs")
        register_min, pull_min = min(registers["this tree"]), min(pulls["this tree"])
        phases = [f"register phases (median of {repeats}): {phase_log.median('registered')}",
                  f"pull phases (median of {repeats}): {phase_log.median('pulled')}",
                  f"least disturbed repeats (minimums; on a shared machine the medians of the baselines move): "
                  f"register {register_min:.3f} s vs copy {min(copies):.3f} s = {register_min / min(copies):.2f}x "
                  f"(floor bound {min(floors['bound']):.3f} s); pull {pull_min:.3f} s vs blob copy "
                  f"{min(blob_copies):.3f} s = {pull_min / min(blob_copies):.2f}x "
                  f"(floor bound {min(floors['blob bound']):.3f} s)",
                  cpu_line(trees)]
    register_seconds, pull_seconds = statistics.median(registers["this tree"]), statistics.median(pulls["this tree"])
    SIDE_BY_SIDE.update({"register": register_seconds, "download": pull_seconds})
    copy, blob_copy, cpus = statistics.median(copies), statistics.median(blob_copies), usable_cpus()
    largest_mb = max(path.stat().st_size for path in files.values()) / 1e6

    def floor(key: str) -> float:
        return statistics.median(floors[key])

    rows = [("register vs fsspec copy of the export + checkpoint", f"{size / 1e6:.1f} MB ({archive_size / 1e6:.1f} "
             "MB archived)", register_seconds, copy, 1.5)]
    if compared:
        rows.append((f"  register, {compared[0]}", f"{size / 1e6:.1f} MB", statistics.median(registers[compared[0]]),
                     copy, None))
    rows += [("  floor: SHA-256 of every file, one core (hash only)", f"{size / 1e6:.1f} MB", floor("all"), copy, None),
             ("  floor: SHA-256 of the largest file alone", f"{largest_mb:.1f} MB", floor("largest"), copy, None),
             (f"  floor: ideal overlap bound, max(largest hash, (all hashes + copy) / {cpus} CPUs)",
              f"{size / 1e6:.1f} MB", floor("bound"), copy, None),
             ("pull (re-hash, temp folder, rename) vs fsspec copy of the blobs", f"{archive_size / 1e6:.1f} MB",
              pull_seconds, blob_copy, 1.5)]
    if compared:
        rows.append((f"  pull, {compared[0]}", f"{archive_size / 1e6:.1f} MB", statistics.median(pulls[compared[0]]),
                     blob_copy, None))
    rows.append(("load_pulled (every pulled file re-hashed) vs fsspec copy of the blobs", f"{archive_size / 1e6:.1f} MB",
                 statistics.median(loads["this tree"]), blob_copy, None))
    if compared:
        rows.append((f"  load_pulled, {compared[0]}", f"{archive_size / 1e6:.1f} MB",
                     statistics.median(loads[compared[0]]), blob_copy, None))
    rows += [("  floor: SHA-256 of every blob, one core (hash only)", f"{archive_size / 1e6:.1f} MB",
              floor("blob all"), blob_copy, None),
             ("  floor: SHA-256 of the largest blob alone", f"{largest_mb:.1f} MB", floor("blob largest"), blob_copy,
              None),
             (f"  floor: ideal overlap bound, max(largest hash, (all hashes + copy) / {cpus} CPUs)",
              f"{archive_size / 1e6:.1f} MB", floor("blob bound"), blob_copy, None),
             ("first register of the process (+ code archive, environment) vs one fsspec copy", f"{size / 1e6:.1f} MB",
              first_register, first_copy, None)]
    return rows, phases


def fake_version(name: str, tag: str) -> dict:
    "A valid version row without files: its manifest hashes to its id, so `alias_at` can load it."
    manifest = {"format": MODEL_FORMAT, "name": name, "files": {}, "serving": {"tag": tag}}
    data = manifest_bytes(manifest)
    return {"id": sha256_hex(data), "name": name, "number": int(tag), "manifest": data.decode(),
            "registered_by": "bench", "reason": "", "created_at": utc_now()}


def fill_history(store: Store, promotions: int) -> tuple[list, list[str]]:
    start = utc_now() - timedelta(minutes=promotions + 10)
    versions = [fake_version("history", str(number)) for number in (1, 2, 3)]
    moments = [start + timedelta(minutes=index) for index in range(promotions)]
    rows = [{"name": "history", "alias": "champion", "kind": "promote",
             "from_version_id": versions[(index - 1) % 3]["id"] if index else None,
             "to_version_id": versions[index % 3]["id"], "who": "bench", "reason": f"promotion {index}",
             "gates": None, "metrics": {"accuracy": 90 + index % 10}, "created_at": moments[index]}
            for index in range(promotions)]

    def work(connection) -> None:
        connection.execute(registered_models.insert().values(name="history", created_at=start))
        connection.execute(model_versions.insert(), versions)
        for begin in range(0, len(rows), 2000):
            connection.execute(model_promotions.insert(), rows[begin:begin + 2000])
        connection.execute(model_aliases.insert().values(name="history", alias="champion",
                                                         version_id=rows[-1]["to_version_id"], promotion_id=promotions,
                                                         updated_at=moments[-1]))
    transaction(store.engine, work)
    return moments, [version["id"] for version in versions]


def bench_alias_at(store: Store, promotions: int, label: str) -> list[tuple]:
    registry = ModelRegistry(store)
    moments, ids = fill_history(store, promotions)
    random.seed(0)
    probes = [moments[random.randrange(len(moments))] + timedelta(seconds=30) for _ in range(300)]
    for probe in probes[:20]:  # the answer is right, not only fast
        index = max(i for i, moment in enumerate(moments) if moment <= probe)
        assert registry.alias_at("history", "champion", probe).id == ids[index % 3]
    timings = []
    for probe in probes:
        started = time.perf_counter()
        registry.alias_at("history", "champion", probe)
        timings.append(time.perf_counter() - started)
    promote_timings = []
    for turn in range(30):
        started = time.perf_counter()
        registry.promote("history", f"history:{1 + turn % 3}", reason="bench")
        promote_timings.append(time.perf_counter() - started)
    return [(f"alias_at over {promotions:,} promotions ({label}), median of {len(probes)}", "",
             statistics.median(timings), None, 0.010),
            (f"promote, one logged move ({label}), median of 30", "", statistics.median(promote_timings), None, None)]


def bench_mlflow(python: str, tmp: Path, export: Path, checkpoint: Path, repeats: int) -> dict[str, float] | None:
    "MLflow's timings on the same files, from its own virtual environment (None if it fails)."
    files = tmp / "mlflow-files"
    shutil.copytree(export, files)
    shutil.copy(checkpoint, files / "checkpoint.safetensors")
    script = Path(__file__).with_name("registry_mlflow.py")
    result = subprocess.run([python, str(script), str(files), str(tmp / "mlflow-work"), "--repeats", str(repeats)],
                            capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        print(f"MLflow run failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_side_by_side(mlflow: dict[str, float]) -> None:
    print(f"\n| operation, same files, SQLite | fsml_nb | MLflow {mlflow['mlflow']} | fsml_nb / MLflow |")
    print("| --- | ---: | ---: | ---: |")
    for operation in ("register", "set alias", "resolve alias", "download"):
        ours, theirs = SIDE_BY_SIDE[operation], mlflow[operation]
        print(f"| {operation} | {ours * 1000:.1f} ms | {theirs * 1000:.1f} ms | {ours / theirs:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=3500, help="MLP width: 3500 gives ~50 MB of weights")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--promotions", type=int, default=10_000)
    parser.add_argument("--mlflow-python", default=os.environ.get("FSML_BENCH_MLFLOW_PYTHON"),
                        help="python of a separate virtual environment with MLflow installed")
    parser.add_argument("--code", type=Path, default=None,
                        help="another checkout (or its fsml_nb/registry.py): its register and pull are timed in the "
                             "same repeats, interleaved with this tree's (before/after in one run)")
    args = parser.parse_args()
    compared = (f"--code {args.code}", compared_registry(args.code)) if args.code else None
    results, mlflow, phases = [], None, []
    print(f"load average before the run: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        export, checkpoint = make_export(tmp, args.hidden)
        weights_mb = (tmp / "export" / "model.fp32.onnx").stat().st_size / 1e6
        print(f"model: MNIST-1D MLP, hidden {args.hidden}, ONNX FP32 {weights_mb:.1f} MB")
        os.sync()  # the export's own writes reach the disk before anything is timed
        rows, phases = bench_register_and_pull(tmp, export, checkpoint, args.repeats, compared)
        results += rows
        if args.mlflow_python:
            mlflow = bench_mlflow(args.mlflow_python, tmp, export, checkpoint, args.repeats)
        with Store(f"sqlite:///{tmp}/history.db", str(tmp / "history-blobs")) as store:
            results += bench_alias_at(store, args.promotions, "SQLite")
        try:
            from fsml_nb.testing import scratch_postgres_database
            with scratch_postgres_database(PG_URL, prefix="fsml_bench") as url, Store(url, str(tmp / "pg-blobs")) as store:
                results += bench_alias_at(store, args.promotions, "PostgreSQL")
        except Exception as error:  # no server: say so and go on
            print(f"PostgreSQL skipped: {str(error).splitlines()[0]}")
    print("\n| measure | size | fsml_nb | baseline | ratio | target | met |\n| --- | --- | ---: | ---: | ---: | ---: | :---: |")
    for label, size, seconds, baseline, target in results:
        if baseline is not None and target is None:
            print(f"| {label} | {size} | {seconds:.3f} s | {baseline:.3f} s | {seconds / baseline:.2f}x | | |")
        elif baseline is not None:
            ratio = seconds / baseline
            print(f"| {label} | {size} | {seconds:.3f} s | {baseline:.3f} s | {ratio:.2f}x | <= {target}x | "
                  f"{'yes' if ratio <= target else '**no**'} |")
        elif target is not None:
            print(f"| {label} | {size} | {seconds * 1000:.2f} ms | | | <= {target * 1000:.0f} ms | "
                  f"{'yes' if seconds <= target else '**no**'} |")
        else:
            print(f"| {label} | {size} | {seconds * 1000:.2f} ms | | | | |")
    print("\n" + "\n".join(phases))
    if mlflow:
        print_side_by_side(mlflow)
    print(f"\nload average after the run: {load_average()}")


if __name__ == "__main__":
    main()
