"""Benchmark: a worker's time on the reply path (a job taken -> its reply sent), one job at a time, per checkout.

    python bench/serve_reply_path.py --work /tmp/servework-yours [--code A,B] [--jobs 300] [--repeat 2]

On a shared 2-core machine the end-to-end latency of bench/serve.py moves by milliseconds with the load of the
neighbours; the CPU time a worker spends between taking a job and sending its reply moves much less. For each
checkout (`--code`, before/after) and each model (the digits model and the ResNet-18 INT8 static variant that
bench/serve.py trained into `--work`), a worker in a subprocess of that checkout serves jobs published one at a
time on RabbitMQ (no HTTP), and this prints the medians of: the worker's CPU time and wall time from the job taken
to its reply sent, the model's run, the prediction's store, the whole answer (model, reply, store, acknowledge:
the worker's CPU per job), and publish -> reply as the publisher sees it.
`--broker-url sqlite` measures the same on a SQLite broker (a file of the run's own; the publisher reads the
replies as the API does, `SqlBroker.replies` once a commit is seen), `--broker-url postgresql://...` on PostgreSQL;
they also print the median time of the publisher's `replies` read that found the reply.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = r'''
import base64, json, statistics, sys, tempfile, threading, time, uuid
from pathlib import Path
from fsml_nb import serve
from fsml_nb.db import open_database
from fsml_nb.serve import (REPLIES_CHANNEL, RabbitClient, ServedModel, ServeWorker, SqlBroker, WorkerConfig,
                           delete_rabbit_queue, new_job)

folder, body_file, jobs, url, gap = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
work = Path(tempfile.mkdtemp(prefix="fsml-reply-path-"))
engine = open_database(f"sqlite:///{work}/fsml.db")
url = f"sqlite:///{work}/queue.db" if url == "sqlite" else url
sql = not url.startswith("amqp")
prefix = f"fsml.replypath.{uuid.uuid4().hex[:8]}"
model = ServedModel.load(folder)
worker = ServeWorker(f"sqlite:///{work}/fsml.db", url, model, WorkerConfig(model.name, queue_prefix=prefix, name="rp"),
                     engine=engine)
taken, on_path, wall, runs, stores = [None], [], [], [], []
take = worker.broker.take
def timed_take(*args, **options):
    deliveries = take(*args, **options)
    if deliveries:
        taken[0] = (time.thread_time(), time.perf_counter())
    return deliveries
worker.broker.take = timed_take
reply_step = "reply_many" if hasattr(worker.broker, "reply_many") else "finish_many"  # where the reply leaves
send = getattr(worker.broker, reply_step)
def timed_send(*args, **options):
    on_path.append((time.thread_time() - taken[0][0]) * 1000)
    wall.append((time.perf_counter() - taken[0][1]) * 1000)
    return send(*args, **options)
setattr(worker.broker, reply_step, timed_send)
run = ServedModel.run
def timed_run(self, inputs):
    started = time.thread_time()
    try:
        return run(self, inputs)
    finally:
        runs.append((time.thread_time() - started) * 1000)
ServedModel.run = timed_run
store = serve.store_predictions
def timed_store(*args):
    started = time.thread_time()
    store(*args)
    stores.append((time.thread_time() - started) * 1000)
serve.store_predictions = timed_store
process, processes = worker.process, []
def timed_process(deliveries):  # the whole answer: model, reply, store, acknowledge (a worker's CPU per job)
    started = time.thread_time()
    try:
        return process(deliveries)
    finally:
        processes.append((time.thread_time() - started) * 1000)
worker.process = timed_process
replied, reads = threading.Event(), []
client = SqlBroker(url) if sql else RabbitClient(url, on_reply=lambda reply: replied.set())
def wait_reply(request_id):  # as the API's SqlReplies._run: read, then wait for a commit
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = client.data_version(REPLIES_CHANNEL)
        started = time.perf_counter()
        if client.replies([request_id]):
            reads.append((time.perf_counter() - started) * 1000)
            return True
        client.wait_for_commit(seen, 0.05, REPLIES_CHANNEL)
    return False
thread = threading.Thread(target=worker.run, daemon=True)
thread.start()
data, queue, round_trips = base64.b64encode(Path(body_file).read_bytes()).decode(), f"{prefix}.{model.name}", []
try:
    for _ in range(jobs + 20):  # the first 20 warm up
        started = time.perf_counter()
        job = new_job(model.name, "image", data)
        client.publish(queue, job)
        if not (wait_reply(job["id"]) if sql else replied.wait(30)):
            raise SystemExit("no reply within 30 s")
        round_trips.append((time.perf_counter() - started) * 1000)
        replied.clear()
        time.sleep(gap / 1000)  # one job at a time, the next `gap` ms after the reply
finally:
    worker.stop()
    thread.join(30)
    client.close()
    if not sql:
        delete_rabbit_queue(url, queue)
median = lambda values: statistics.median(values[20:])
print(json.dumps({"reply_step": reply_step, "on_path_cpu": median(on_path), "on_path_wall": median(wall),
                  "run_cpu": median(runs), "store_cpu": median(stores), "round_trip": median(round_trips), "process_cpu": median(processes),
                  "replies_read": median(reads) if reads else None}))
'''


def measure(code: Path, folder: Path, body: Path, jobs: int, url: str, gap_ms: float) -> dict:
    "Run the measurement in a subprocess that imports the fsml_nb of `code` (`python -c` puts its cwd first on sys.path)."
    import json

    done = subprocess.run([sys.executable, "-c", MEASURE, str(folder), str(body), str(jobs), url, str(gap_ms)],
                          env={**os.environ, "PYTHONPATH": str(code)}, cwd=code, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"the measurement failed in {code}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from serve import RABBIT_URL, png, variant_folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the --work folder of bench/serve.py (its trained models)")
    parser.add_argument("--code", default=str(ROOT), help="comma-separated checkouts whose fsml_nb the worker runs")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1, help="measure each row this many times (codes interleaved)")
    parser.add_argument("--broker-url", default=RABBIT_URL)
    parser.add_argument("--gaps-ms", default="0,10", help="comma-separated pauses between a reply and the next job")
    parser.add_argument("--models", default="digits,resnet18-rgb64 int8-static")
    arguments = parser.parse_args()
    work = Path(arguments.work)
    models = {}
    if (work / "pulled" / "manifest.json").is_file():
        models["digits"] = (work / "pulled", png((8, 8)))
    if (work / "pulled-rgb64" / "manifest.json").is_file():
        models["resnet18-rgb64 int8-static"] = (variant_folder(work / "pulled-rgb64", "int8-static"), png((64, 64, 3)))
    if not models:
        raise SystemExit(f"{work} holds no trained models: run bench/serve.py --work {work} first")
    print("| code | model | gap (ms) | reply sent after | worker CPU taken -> reply (ms) | worker wall taken -> reply (ms) | "
          "model run CPU (ms) | store CPU (ms) | worker CPU whole answer (ms) | publish -> reply (ms) | replies read (ms) | "
          "load avg |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    codes = [Path(code).resolve() for code in arguments.code.split(",")]
    for label, (folder, body) in [(label, models[label]) for label in arguments.models.split(",") if label in models]:
        body_file = work / f"reply-path-{label.split()[0]}.png"
        body_file.write_bytes(body)
        runs = [(gap, code) for gap in (float(gap) for gap in arguments.gaps_ms.split(","))
                for _ in range(arguments.repeat) for code in codes]  # codes interleaved
        for gap, code in runs:
            row = measure(code, folder, body_file, arguments.jobs, arguments.broker_url, gap)
            after = "store, reply" if row["reply_step"] == "finish_many" else "reply (store after)"
            print(f"| {code} | {label} | {gap:g} | {after} | {row['on_path_cpu']:.3f} | {row['on_path_wall']:.3f} | "
                  f"{row['run_cpu']:.3f} | {row['store_cpu']:.3f} | {row['process_cpu']:.3f} | {row['round_trip']:.3f} | "
                  f"{'-' if row.get('replies_read') is None else format(row['replies_read'], '.3f')} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
