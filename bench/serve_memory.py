"""Benchmark: a serving worker's memory (RSS) over many requests.

    python bench/serve_memory.py [--requests 100000] [--broker sqlite|rabbitmq] [--max-batch 8]

One `fsml serve worker` process serves a small model (8x8 grey images, a linear ONNX model, so the
serving machinery, not the model, dominates) from the SQLite or RabbitMQ broker. This process queues
PNG requests through the broker directly (the worker's path is the same as behind the HTTP API; HTTP
is left out because 100,000 HTTP requests take too long on a small shared machine), keeping at most
`--window` jobs waiting, and reads the worker's RSS from /proc at the start, after the warm-up and
every tenth of the run. Target (issue 12): RSS stable after warm-up (growth < 10%).
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from fsml_nb.db import open_database
from fsml_nb.serve import (FSML_COMMAND, RabbitClient, SqlBroker, delete_rabbit_queue, live_workers, new_job,
                           queue_name, write_linear_model_folder)

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    "The resident set size of a process, in MiB."
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def pngs(count: int) -> list[str]:
    "Base64 PNGs of random 8x8 grey images (different inputs, so no cache can help)."
    images, generator = [], np.random.default_rng(0)
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray((generator.random((8, 8)) * 255).astype(np.uint8)).save(buffer, format="PNG")
        images.append(base64.b64encode(buffer.getvalue()).decode())
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=10_000, help="requests before the reference RSS")
    parser.add_argument("--broker", default="sqlite", choices=["sqlite", "rabbitmq"])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=2000, help="jobs waiting in the queue at most")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fsml-bench-serve-memory-"))
    model = "memory"
    folder = write_linear_model_folder(work / "model", np.random.default_rng(0).random((64, 10), dtype=np.float32))
    db_url = f"sqlite:///{work}/fsml.db"
    engine = open_database(db_url)
    prefix = f"fsml.bench.{uuid.uuid4().hex[:8]}"
    queue = queue_name(prefix, model)
    broker_url = RABBIT_URL if arguments.broker == "rabbitmq" else f"sqlite:///{work}/queue.db"
    answered: list[int] = [0]
    if arguments.broker == "rabbitmq":
        broker = RabbitClient(broker_url, on_reply=lambda reply: answered.__setitem__(0, answered[0] + 1))
        done = lambda: answered[0]  # noqa: E731
    else:
        broker = SqlBroker(broker_url)
        done = None
    env = {**os.environ, "FSML_HOME": str(work / "home"), "FSML_DB_URL": db_url, "FSML_BROKER_URL": broker_url,
           "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([*FSML_COMMAND, "serve", "worker", "--model", model, "--folder", str(folder),
                               "--queue-prefix", prefix, "--max-batch", str(arguments.max_batch), "--name", "memory"],
                              env=env)
    images = pngs(1000)
    rows = []
    try:
        deadline = time.monotonic() + 120
        while "memory" not in live_workers(engine, model):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the worker did not come up")
            time.sleep(0.2)
        rows.append(("start (live, no request yet)", 0, rss_mib(worker.pid), 0.0))
        published, started = 0, time.perf_counter()
        marks = sorted({arguments.warmup, *range(arguments.requests // 10, arguments.requests + 1,
                                                 arguments.requests // 10)})
        while marks:
            served = done() if done else published - broker.depth(queue)
            if served >= marks[0]:  # checked on every turn, so each reading is taken near its mark
                label = "after warm-up" if marks[0] == arguments.warmup else ""
                rows.append((label, served, rss_mib(worker.pid), time.perf_counter() - started))
                marks.pop(0)
            elif published < arguments.requests and published - served < arguments.window:
                for _ in range(min(100, arguments.requests - published)):
                    broker.publish(queue, new_job(model, "image", images[published % len(images)]))
                    published += 1
            else:
                time.sleep(0.02)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.close()
        if arguments.broker == "rabbitmq":
            delete_rabbit_queue(RABBIT_URL, queue)
    reference = next(rss for label, _, rss, _ in rows if label == "after warm-up")
    print(f"worker memory, {arguments.broker} broker, max batch {arguments.max_batch}, linear 8x8 model, "
          f"{arguments.requests:,} PNG requests (through the broker, not HTTP)\n")
    print("| point | requests served | RSS (MiB) | vs after warm-up | elapsed (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, served, rss, elapsed in rows:
        print(f"| {label} | {served:,} | {rss:.1f} | {(rss / reference - 1) * 100:+.1f}% | {elapsed:.0f} |")
    growth = (rows[-1][2] / reference - 1) * 100
    print(f"\ngrowth after warm-up: {growth:+.1f}% (target < 10%): {'met' if growth < 10 else 'NOT met'}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
