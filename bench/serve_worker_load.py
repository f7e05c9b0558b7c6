"""Benchmark: one worker's CPU per job at max load on a SQLite broker, per checkout (before/after, interleaved).

    python bench/serve_worker_load.py --code /work/main,. [--jobs 2000] [--repeat 3] [--max-batch 16]

For each checkout (`--code`), a subprocess of that checkout publishes `--jobs` jobs (a 64x64 RGB PNG each, ~16 KB
of base64) into a fresh SQLite broker, then one `ServeWorker` (the linear "ceiling" model on 3x64x64 inputs, whose
inference costs about nothing, `max_batch` jobs a batch) answers them all. It prints the worker process's CPU time
per job (user + system, all its threads) and the wall time per job (and the publisher's CPU per job); on a shared machine the CPU time is the number
to compare. Checkouts run in turn, `--repeat` times, so a change of the machine's load touches both.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MEASURE = r'''
import base64, io, json, os, sys, tempfile, time, uuid
from pathlib import Path
import numpy as np
from PIL import Image
from fsml_nb.db import open_database
from fsml_nb.serve import ServedModel, ServeWorker, SqlBroker, WorkerConfig, new_job, write_linear_model_folder

jobs, max_batch = int(sys.argv[1]), int(sys.argv[2])
work = Path(tempfile.mkdtemp(prefix="fsml-worker-load-"))
folder = write_linear_model_folder(work / "ceiling-rgb64", np.random.default_rng(0).normal(0, 0.01, (3 * 64 * 64, 10)),
                                   input_shape=(3, 64, 64))
buffer = io.BytesIO()
Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
data = base64.b64encode(buffer.getvalue()).decode()
model = ServedModel.load(folder)
config = WorkerConfig(model.name, queue_prefix=f"fsml.load.{uuid.uuid4().hex[:8]}", max_batch=max_batch, name="load")
broker_url = f"sqlite:///{work}/queue.db"
publisher = SqlBroker(broker_url)
published = time.process_time()
for start in range(0, jobs, 100):
    publisher.publish_many([(config.queue, new_job(model.name, "image", data)) for _ in range(min(100, jobs - start))])
published = time.process_time() - published
engine = open_database(f"sqlite:///{work}/fsml.db")
worker = ServeWorker(f"sqlite:///{work}/fsml.db", broker_url, model, config, engine=engine)
cpu, wall = time.process_time(), time.perf_counter()
served = worker.run(max_jobs=jobs)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
assert served == jobs and publisher.depth(config.queue) == 0, (served, publisher.depth(config.queue))
publisher.close()
import fsml_nb
print(json.dumps({"code": str(Path(fsml_nb.__file__).parents[1]), "cpu_ms": cpu * 1000 / jobs,
                  "publish_cpu_ms": published * 1000 / jobs, "wall_ms": wall * 1000 / jobs, "bytes": len(data),
                  "load": os.getloadavg()[0]}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=".", help="checkouts to compare, comma-separated (each one's fsml_nb)")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=16)
    arguments = parser.parse_args()
    codes = [str(Path(code).resolve()) for code in arguments.code.split(",")]
    results: dict[str, list[dict]] = {code: [] for code in codes}
    for round_ in range(arguments.repeat):
        for code in codes:
            environment = {**os.environ, "PYTHONPATH": code}
            output = subprocess.run([sys.executable, "-c", MEASURE, str(arguments.jobs), str(arguments.max_batch)],
                                    env=environment, cwd=code, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            assert result["code"] == code, f"{code} imported the fsml_nb of {result['code']}"
            results[code].append(result)
            print(f"round {round_ + 1} {code}: CPU {result['cpu_ms']:.3f} ms/job, wall {result['wall_ms']:.3f} ms/job "
                  f"(publishing, 100 a transaction: CPU {result['publish_cpu_ms']:.3f} ms/job; body {result['bytes']} chars, load average {result['load']:.2f})", flush=True)
    for code, runs in results.items():
        print(f"{code}: median CPU {statistics.median(run['cpu_ms'] for run in runs):.3f} ms/job, median wall "
              f"{statistics.median(run['wall_ms'] for run in runs):.3f} ms/job, median publishing CPU "
              f"{statistics.median(run['publish_cpu_ms'] for run in runs):.3f} ms/job over {len(runs)} runs")


if __name__ == "__main__":
    main()
