"""Benchmark: serving models over HTTP -> queue -> workers, against in-process ONNX Runtime.

    python bench/serve.py [--seconds 3] [--brokers sqlite,rabbitmq] [--workers 1,2]

Trains the digits timm ResNet briefly, and timm's ResNet-18 (random init, a few steps) on digits drawn
64x64 RGB, registers and pulls each (exported by fsml_nb.export: the folder a worker serves), then
measures, for each model in the same run:
- the baseline: in-process ONNX Runtime at batch 1 on the input the requests carry (decoded), in each setting of
  `BASELINE_SETTINGS` (1 thread; 2 threads, idle threads spinning or not): the best throughput and the best p50;
- the full path (`fsml serve api` + N `fsml serve worker` processes on 127.0.0.1) for each broker,
  1 and 2 workers, batching off (max batch 1) and on (max batch 16, wait 2 ms): the maximum
  throughput (closed loops with `--in-flight` requests in flight: the best of 32 and 64 by default, since two workers
  that each take batches of 16 starve with 32), then p50/p95/p99 at 50% and 90% of it (paced
  arrivals), and the added p50 at low load (one request at a time, minus the baseline's p50).
The `ceiling` model is a linear layer on the ResNet-18's 64x64 RGB input: its inference costs about nothing, so
its best row is the most this machine serves on that input, printed at the end against each baseline.
Targets (issue 12): with batching, served throughput >= 1.0x the in-process batch-1 loop; added p50
at low load <= 3 ms (RabbitMQ), <= 5 ms (SQLite). Load loops are bounded and stay on 127.0.0.1.

The load generator is a bare asyncio HTTP/1.1 client (keep-alive, one prepared request): httpx cost
1.2-1.9 ms of CPU per request, a good part of a 2-core machine. Each row also prints the CPU time the
API, the workers and the client spent per request during the maximum-throughput loop: on a shared
machine that is steadier than the throughput. `--code A,B` runs the servers from two checkouts back
to back (before/after), `--repeat` interleaves them, `--work` keeps the trained models for next time.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from fsml_nb.db import open_database
from fsml_nb.serve import (FSML_COMMAND, ServedModel, add_serve_client, delete_rabbit_queue, image_input, live_workers,
                           write_linear_model_folder)

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROOT = Path(__file__).resolve().parents[1]


def digits_folder(work: Path, model: str, steps: int) -> Path:
    "Train, register and pull a timm model on digits; the pulled folder."
    from fsml_nb.data import import_digits
    from fsml_nb.store import Store
    from fsml_nb.train import TrainConfig, timm_spec

    store = Store(f"sqlite:///{work}/fsml.db", str(work / "blobs"))
    digits = import_digits(store)
    return train_register_pull(store, timm_spec(model, 10, in_chans=1, small_input=True), digits, "digits",
                               TrainConfig(max_steps=steps, batch_size=64, val_fraction=0), work / "pulled")


def train_register_pull(store, spec, version, name: str, config, folder: Path) -> Path:
    "Train `spec` on `version`, register the checkpoint as `name`, pull it into `folder`; closes `store`."
    from fsml_nb.registry import ModelRegistry
    from fsml_nb.train import fit

    checkpoint = folder.with_name(f"{name}.safetensors")
    fit(spec, version, store=store, progress=False, config=config, checkpoint_path=checkpoint)
    registry = ModelRegistry(store)
    pulled = registry.pull(registry.register(checkpoint, name, reason="bench/serve.py"), folder)
    store.close()
    return pulled


def rgb64_folder(work: Path, steps: int) -> Path:
    "Train timm's ResNet-18 (3 channels, 10 classes) briefly on digits drawn as 64x64 RGB; register, pull; the folder."
    from sklearn.datasets import load_digits

    from fsml_nb.data import encode_png
    from fsml_nb.store import LabelledItem, LabelSchema, NewItem, Store
    from fsml_nb.train import TrainConfig, timm_spec

    store = Store(f"sqlite:///{work}/fsml-rgb64.db", str(work / "blobs-rgb64"))
    digits = load_digits()
    tints = np.random.default_rng(0).uniform(0.3, 1.0, (len(digits.images), 3))  # each image its own colour
    grey = np.kron(digits.images / 16, np.ones((8, 8)))  # 8x8 -> 64x64
    pixels = np.round(grey[..., None] * tints[:, None, None, :] * 255).astype(np.uint8)
    labelled = [LabelledItem(NewItem(encode_png(pixels[index]), "image/png", source_url="sklearn:digits (64x64 RGB)"),
                             str(digits.target[index]), "test" if index % 5 == 0 else "train")
                for index in range(len(pixels))]
    version = store.import_version(labelled, LabelSchema("single_label", tuple(str(digit) for digit in range(10))),
                                   "digits-rgb64", source="bench/serve.py")
    return train_register_pull(store, timm_spec("resnet18", 10, in_chans=3), version, "resnet18-rgb64",
                               TrainConfig(max_steps=steps, batch_size=32, val_fraction=0), work / "pulled-rgb64")


def ceiling_folder(work: Path) -> Path:
    "A model whose inference costs about nothing (a linear layer on 3x64x64 inputs): the serving path's own ceiling."
    folder = work / "ceiling-rgb64"
    if not (folder / "manifest.json").is_file():
        weights = np.random.default_rng(0).normal(0, 0.01, (3 * 64 * 64, 10))
        write_linear_model_folder(folder, weights, input_shape=(3, 64, 64))
    return folder


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return pick(0.50), pick(0.95), pick(0.99)


BASELINE_SETTINGS = ((1, False), (2, True), (2, False))  # ONNX Runtime (intra-op threads, idle threads spin)


def baseline_setting(folder: Path, seconds: float, body: bytes, threads: int = 1, spinning: bool = False
                     ) -> dict[str, float]:
    "In-process ONNX Runtime at batch 1 on the input the served requests carry (`body`, decoded as a worker does)."
    model = ServedModel.load(folder, threads=threads, spinning=spinning)
    sample = image_input(body, model.input_shape)[None]
    for _ in range(10):  # warm up
        model.run(sample)
    latencies, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        model.run(sample)
        latencies.append((time.perf_counter() - started) * 1000)
    p50, p95, p99 = percentiles(latencies)
    return {"throughput": len(latencies) / seconds, "p50": p50, "p95": p95, "p99": p99,
            "setting": f"{threads} thread{'s' * (threads > 1)}{', spinning' if spinning else ''}"}


def baseline(folder: Path, seconds: float, body: bytes) -> tuple[dict[str, float], list[dict[str, float]]]:
    "The best in-process setting (`BASELINE_SETTINGS`): the highest throughput, and the lowest p50; and each setting's."
    settings = [baseline_setting(folder, seconds, body, threads, spinning) for threads, spinning in BASELINE_SETTINGS]
    fastest = max(settings, key=lambda setting: setting["throughput"])
    quickest = min(settings, key=lambda setting: setting["p50"])
    return {"throughput": fastest["throughput"], "p50": quickest["p50"], "setting": fastest["setting"],
            "p50_setting": quickest["setting"]}, settings


def paced_p50(folder: Path, body: bytes, gap_ms: float, calls: int = 300) -> float:
    "p50 (ms) of decode + inference in a worker's setting (1 thread, no spinning), one call every `gap_ms`: a process "
    "that idles between jobs, as a worker at low load does (on some machines a core that idled runs slower at first)."
    model = ServedModel.load(folder, threads=1, spinning=False)
    for _ in range(10):
        model.run(image_input(body, model.input_shape)[None])
    latencies = []
    for _ in range(calls):
        time.sleep(gap_ms / 1000)
        started = time.perf_counter()
        model.run(image_input(body, model.input_shape)[None])
        latencies.append((time.perf_counter() - started) * 1000)
    return percentiles(latencies)[0]


RABBIT_ECHO = r"""
import sys, pika
url, queue, replies = sys.argv[1:4]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.basic_qos(prefetch_count=1)
def echo(channel, method, properties, body):
    channel.basic_publish("", replies, body)  # a transient reply, as a worker's (the prediction is stored)
    channel.basic_ack(method.delivery_tag)
channel.basic_consume(queue, echo)
print("ready", flush=True)
channel.start_consuming()
"""


def rabbit_floor(url: str = RABBIT_URL, messages: int = 300) -> float:
    "p50 (ms) of RabbitMQ alone on a job's round trip, with pika and no fsml_nb code: a persistent message to a "
    "durable quorum queue, taken by a consumer in another process that publishes a transient reply to a durable "
    "classic queue and acknowledges, the reply consumed here."
    import pika

    name = f"fsml.bench.floor.{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_declare(f"{name}.replies", durable=True)
    echo = subprocess.Popen([sys.executable, "-c", RABBIT_ECHO, url, name, f"{name}.replies"], stdout=subprocess.PIPE,
                            text=True)
    try:
        echo.stdout.readline()
        replied: list[bytes] = []
        channel.basic_consume(f"{name}.replies", lambda _c, _m, _p, body: replied.append(body), auto_ack=True)
        latencies = []
        for _ in range(messages + 20):
            started = time.perf_counter()
            channel.basic_publish("", name, b"x" * 300, pika.BasicProperties(delivery_mode=2))
            while not replied:
                connection.process_data_events(time_limit=0.01)
            replied.clear()
            latencies.append((time.perf_counter() - started) * 1000)
        return percentiles(latencies[20:])[0]
    finally:
        echo.kill()
        echo.wait()
        channel.queue_delete(name)
        channel.queue_delete(f"{name}.replies")
        connection.close()


def http_floor(base: str, requests: int = 300) -> float:
    "p50 (ms) of GET /healthz on the running API: HTTP over loopback through uvicorn and FastAPI, nothing else."
    async def measure() -> list[float]:
        reader, writer = await asyncio.open_connection(*base.removeprefix("http://").split(":"))
        latencies = []
        for _ in range(requests + 20):
            started = time.perf_counter()
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
        writer.close()
        return latencies[20:]
    return percentiles(run_load(measure()))[0]


def png(shape: tuple[int, ...] = (8, 8)) -> bytes:
    "A PNG of random pixels: (height, width) grey or (height, width, 3) RGB."
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random(shape) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class RawClient:
    "HTTP/1.1 keep-alive connections that POST one prepared request: a load generator that costs little CPU."

    def __init__(self, base: str, token: str, body: bytes, path: str = "/v1/predict"):
        self.host, _, port = base.removeprefix("http://").partition(":")
        self.port = int(port or 80)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
        self.request = head.encode() + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self) -> int:
        "Send the request on an idle connection (or a new one); the response's status."
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status, length = int(head[9:12]), None
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"transfer-encoding:"):
                raise RuntimeError("RawClient reads responses with a Content-Length only")
        await reader.readexactly(length or 0)
        self.idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def run_load(coroutine):
    "Run a load coroutine on uvloop when it is installed (as uvicorn does), else asyncio's loop."
    try:
        import uvloop
        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def _client_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


async def closed_loop(base: str, token: str, body: bytes, seconds: float, concurrency: int,
                      client: str = "raw") -> tuple[float, list, int, float]:
    "Requests with `concurrency` in flight for `seconds`: (throughput, latencies ms, failures, client CPU ms/request)."
    latencies, failures = [], 0
    deadline = time.perf_counter() + seconds
    cpu = _client_cpu()
    if client == "raw":
        raw = RawClient(base, token, body)
        post = raw.post
    else:
        http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency))
        post = lambda: _status(http.post("/v1/predict", content=body))  # noqa: E731

    async def loop():
        nonlocal failures
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status = await post()
            latencies.append((time.perf_counter() - started) * 1000)
            failures += status != 200
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = (_client_cpu() - cpu) * 1000 / max(1, len(latencies))
    raw.close() if client == "raw" else await http.aclose()
    return len(latencies) / elapsed, latencies, failures, cpu


async def _status(response) -> int:
    return (await response).status_code


async def paced(base: str, token: str, body: bytes, seconds: float, rate: float) -> tuple[list, int]:
    "Requests started at `rate` per second (evenly spaced) for `seconds`: (latencies ms, failures)."
    latencies, failures = [], 0
    raw = RawClient(base, token, body)

    async def one():
        nonlocal failures
        started = time.perf_counter()
        status = await raw.post()
        latencies.append((time.perf_counter() - started) * 1000)
        failures += status != 200
    tasks, start = [], time.perf_counter()
    for index in range(max(1, int(rate * seconds))):
        await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    raw.close()
    return latencies, failures


IDLE_GAP_MS = 5.0  # how long a worker idles before a job at low load, roughly (the served round trip)


def breakdown(row: dict[str, float], broker_floor: float | None, paced: float) -> str:
    "The low-load p50 as its parts: the HTTP floor, the broker's own round trip (RabbitMQ), inference, and the rest."
    rest = row["low_p50"] - row["http_p50"] - (broker_floor or 0.0) - paced
    broker = "-" if broker_floor is None else f"{broker_floor:.2f}"
    return f"{row['low_p50']:.2f} = {row['http_p50']:.2f} + {broker} + {paced:.2f} + {rest:.2f}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(work: Path, model: str, folder: Path, broker: str, workers: int, batch: int, wait_ms: float, seconds: float,
          body: bytes, token: str, db_url: str, base_p50: float, engine, code: Path = ROOT,
          client: str = "raw", in_flight: tuple[int, ...] = (32,), low_load_only: bool = False) -> dict[str, float]:
    "One row: start the API and `workers` workers (running the fsml_nb in `code`), measure, stop them."
    prefix = f"fsml.bench.{uuid.uuid4().hex[:8]}"
    broker_url = RABBIT_URL if broker == "rabbitmq" else f"sqlite:///{work}/queue-{prefix}.db"
    env = {**os.environ, "FSML_HOME": str(work / "home"), "FSML_DB_URL": db_url, "FSML_BROKER_URL": broker_url,
           "PYTHONPATH": str(code)}
    port = free_port()
    processes = [subprocess.Popen([*FSML_COMMAND, "serve", "api", "--port", str(port), "--queue-prefix", prefix,
                                   "--max-queue", "100000"], env=env, cwd=code)]  # cwd: `python -c` imports from it first
    names = [f"bench-{prefix}-{index}" for index in range(workers)]
    processes += [subprocess.Popen([*FSML_COMMAND, "serve", "worker", "--model", model, "--folder", str(folder),
                                    "--queue-prefix", prefix, "--max-batch", str(batch), "--max-wait-ms", str(wait_ms),
                                    "--name", name], env=env, cwd=code) for name in names]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not set(names) <= set(live_workers(engine, model)) or _ready(base) != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the servers did not come up")
            time.sleep(0.2)
        run_load(closed_loop(base, token, body, 1.0, 4, client))  # warm up
        run_load(closed_loop(base, token, body, seconds, 1, client))
        _, low_latencies, _, _ = run_load(closed_loop(base, token, body, seconds, 1, client))
        low = {"low_p50": percentiles(low_latencies)[0], "http_p50": http_floor(base)}
        if low_load_only:
            nothing = float("nan")
            return {**low, "throughput": nothing, "added_p50": low["low_p50"] - base_p50, "failed": 0,
                    "client_cpu": nothing, "api_cpu": nothing, "worker_cpu": nothing, "p@50": (nothing,) * 3,
                    "p@90": (nothing,) * 3}
        loops = []  # (throughput, answered, failed, client CPU, each process's CPU ms/request) for each in-flight count
        for concurrency in in_flight:
            cpu_before = [process_cpu(process.pid) for process in processes]
            throughput, latencies, failed, client_cpu = run_load(closed_loop(base, token, body, seconds, concurrency,
                                                                             client))
            cpu = [(process_cpu(process.pid) - before) * 1000 / len(latencies)
                   for process, before in zip(processes, cpu_before, strict=True)]
            loops.append((throughput, concurrency, failed, client_cpu, cpu))
        throughput, concurrency, _, client_cpu, cpu = max(loops, key=lambda loop: loop[0])
        row = {**low, "throughput": throughput, "in_flight": concurrency, "added_p50": low["low_p50"] - base_p50,
               "failed": sum(loop[2] for loop in loops), "client_cpu": client_cpu, "api_cpu": cpu[0],
               "worker_cpu": sum(cpu[1:])}
        for share in (0.5, 0.9):
            latencies, failures = run_load(paced(base, token, body, seconds, share * throughput))
            row[f"p@{int(share * 100)}"] = percentiles(latencies)
            row["failed"] += failures
        return row
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        if broker == "rabbitmq":
            delete_rabbit_queue(RABBIT_URL, f"{prefix}.{model}")


def process_cpu(pid: int) -> float:
    "CPU seconds (user + system, all threads) a process has used so far, from /proc (Linux)."
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(base: str) -> int | None:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def variant_folder(folder: Path, variant: str) -> Path:
    "A copy of a pulled folder (files linked) whose manifest serves `variant` (fp32, int8-static, ...), golden included."
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = manifest["export"]["metrics"].get(f"onnx-{variant}")
    if metrics is None or not (folder / f"model.{variant}.onnx").is_file():
        raise SystemExit(f"{folder.name} has no exported variant {variant!r} "
                         f"(it has {', '.join(sorted(manifest['export']['metrics']))})")
    target = folder.with_name(f"{folder.name}-{variant}")
    if not target.exists():
        target.mkdir()
        for path in folder.iterdir():
            if path.name != "manifest.json":
                (target / path.name).symlink_to(path)
    manifest["serving"].update(file=f"model.{variant}.onnx", variant=f"onnx-{variant}", golden={
        "inputs": "golden/inputs.npy", "outputs": f"golden/onnx-{variant}.npy",
        "atol": max(1e-3, float(metrics.get("logit_tolerance") or 1e-3))})
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--brokers", default="sqlite,rabbitmq")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batching", default="off,on", help="off (max batch 1), on (16, 2 ms), or both")
    parser.add_argument("--models", default="digits,resnet18-rgb64,ceiling",
                        help="digits, resnet18-rgb64, ceiling (a linear model on the same 64x64 RGB input: the most "
                             "the serving path can answer, against which the ResNet-18's baselines are compared)")
    parser.add_argument("--model", default="resnet10t", help="timm model trained on digits")
    parser.add_argument("--steps", type=int, default=100, help="training steps (digits model)")
    parser.add_argument("--rgb64-steps", type=int, default=5, help="training steps (ResNet-18 at 64x64 RGB)")
    parser.add_argument("--rgb64-variants", default="chosen",
                        help="variants of the ResNet-18 to serve: chosen (the export's choice), fp32, int8-static, ... "
                             "(comma-separated; the baseline runs the same variant)")
    parser.add_argument("--code", default=str(ROOT),
                        help="comma-separated repository roots whose fsml_nb the servers run (before/after in one run)")
    parser.add_argument("--client", default="raw", choices=("raw", "httpx"),
                        help="load generator for the closed loops: raw asyncio HTTP/1.1 (cheap) or httpx")
    parser.add_argument("--repeat", type=int, default=1, help="measure each row this many times (codes interleaved)")
    parser.add_argument("--in-flight", default="32,64",
                        help="requests in flight while measuring the maximum throughput (closed loops, comma-separated: "
                             "the best is kept)")
    parser.add_argument("--low-load-only", action="store_true",
                        help="measure only the added p50 at low load (no maximum throughput, no paced loads)")
    parser.add_argument("--work", help="a folder to keep the trained models in and reuse (default: a new temporary one)")
    arguments = parser.parse_args()
    work = Path(arguments.work) if arguments.work else Path(tempfile.mkdtemp(prefix="fsml-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work}/fsml.db"
    models = {}
    for model in arguments.models.split(","):
        if model == "digits":
            folder = work / "pulled" if (work / "pulled" / "manifest.json").is_file() else \
                digits_folder(work, arguments.model, arguments.steps)
            models[model] = (folder, png((8, 8)), f"timm {arguments.model} trained {arguments.steps} steps on digits "
                             "(8x8 grey)")
        elif model == "resnet18-rgb64":
            folder = work / "pulled-rgb64" if (work / "pulled-rgb64" / "manifest.json").is_file() else \
                rgb64_folder(work, arguments.rgb64_steps)
            about = (f"timm resnet18 (3 channels, 10 classes) trained {arguments.rgb64_steps} steps on digits drawn "
                     "64x64 RGB")
            for variant in arguments.rgb64_variants.split(","):
                chosen = variant == "chosen"
                models[model if chosen else f"{model} {variant}"] = (
                    folder if chosen else variant_folder(folder, variant), png((64, 64, 3)),
                    about + ("" if chosen else f"; served variant {variant} (not necessarily the export's choice)"))
        elif model == "ceiling":
            models[model] = (ceiling_folder(work), png((64, 64, 3)), "a linear layer on 3x64x64 inputs (inference "
                             "costs ~nothing): the serving path's ceiling for the ResNet-18's 64x64 RGB input")
        else:
            raise SystemExit(f"unknown model {model!r}: digits, resnet18-rgb64 or ceiling")
    engine = open_database(db_url)  # the only engine of this process on that file (see fsml_nb.serve)
    token = add_serve_client(engine, f"bench-{uuid.uuid4().hex[:6]}")
    codes = [Path(code).resolve() for code in arguments.code.split(",")]
    baselines, ceilings = {}, {}  # model label -> baseline; broker -> the ceiling model's best served req/s
    broker_floors = {"sqlite": None}  # the SQLite queue is fsml_nb's own code: no floor below it to take away
    if "rabbitmq" in arguments.brokers.split(","):
        broker_floors["rabbitmq"] = rabbit_floor()
        print(f"RabbitMQ alone (pika, no fsml_nb code): a persistent message to a quorum queue, consumed in another "
              f"process that replies (transient, as a worker does) and acknowledges, reply consumed: p50 {broker_floors['rabbitmq']:.2f} "
              f"ms (load average {os.getloadavg()[0]:.1f})")
    for label, (folder, body, about) in models.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        model, serving = manifest["name"], manifest["serving"]
        base, settings = baseline(folder, arguments.seconds, body)
        baselines[label] = base
        paced = paced_p50(folder, body, IDLE_GAP_MS)
        print(f"\n## {label}: {about}; serving {serving['file']} ({serving.get('variant')})")
        print("In-process ONNX Runtime, batch 1, on the served input (decoded): " + "; ".join(
            f"{setting['setting']}: {setting['throughput']:.0f} inferences/s, p50 {setting['p50']:.3f} ms"
            for setting in settings) + f" (load average {os.getloadavg()[0]:.1f}). Baseline: the best of these, "
            f"{base['throughput']:.0f}/s ({base['setting']}), p50 {base['p50']:.3f} ms ({base['p50_setting']}). In a "
            f"worker's setting (1 thread) with the process idle {IDLE_GAP_MS:g} ms before each call, as at low load: "
            f"p50 {paced:.3f} ms\n")
        print("| code | broker | workers | batching | max req/s (x baseline, in flight) | added p50 at low load (ms) | "
              "p50/p95/p99 at 50% (ms) | p50/p95/p99 at 90% (ms) | failed | CPU ms/req at max: API / workers / client | "
              "load avg | low-load p50 (ms) = HTTP + broker alone + inference at low load + the rest |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        batchings = [(1, 0.0, "off"), (16, 2.0, "on (16, 2 ms)")]
        batchings = [each for each in batchings if each[2].split()[0] in arguments.batching.split(",")]
        for broker in arguments.brokers.split(","):
            for workers in (int(count) for count in arguments.workers.split(",")):
                for batch, wait_ms, batching in batchings:
                    for code in [code for _ in range(arguments.repeat) for code in codes]:  # back to back, interleaved
                        row = serve(work, model, folder, broker, workers, batch, wait_ms, arguments.seconds, body,
                                    token, db_url, base["p50"], engine, code, arguments.client,
                                    tuple(int(count) for count in arguments.in_flight.split(",")),
                                    arguments.low_load_only)
                        if label == "ceiling" and not arguments.low_load_only:
                            ceilings[broker] = max(ceilings.get(broker, 0.0), row["throughput"])
                        cells = [" / ".join(f"{value:.1f}" for value in row[key]) for key in ("p@50", "p@90")]
                        print(f"| {code} | {broker} | {workers} | {batching} | {row['throughput']:.0f} "
                              f"({row['throughput'] / base['throughput']:.2f}x, {row.get('in_flight', '-')}) | {row['added_p50']:.2f} | {cells[0]} | "
                              f"{cells[1]} | {row['failed']} | {row['api_cpu']:.2f} / {row['worker_cpu']:.2f} / "
                              f"{row['client_cpu']:.2f} | {os.getloadavg()[0]:.1f} | "
                              f"{breakdown(row, broker_floors.get(broker), paced)} |",
                              flush=True)
    if ceilings:
        print("\n## The serving path's ceiling (the near-free model's best row) against each baseline\n")
        print("| broker | ceiling req/s | " + " | ".join(f"{label} baseline /s (ceiling x)" for label in baselines
                                                         if label != "ceiling") + " |")
        print("| --- | ---: |" + " ---: |" * (len(baselines) - 1))
        for broker, ceiling in ceilings.items():
            print(f"| {broker} | {ceiling:.0f} | " + " | ".join(
                f"{base['throughput']:.0f} ({ceiling / base['throughput']:.2f}x)" for label, base in baselines.items()
                if label != "ceiling") + " |")
        print("A ceiling below a baseline means no batching or worker count can serve that model at its in-process "
              "batch-1 rate on this machine: the HTTP, broker and storage work per request alone costs more.")
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
