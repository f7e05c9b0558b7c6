"""Serving end to end on real brokers (SQLite, PostgreSQL, RabbitMQ): predictions through workers in their own
processes, bad requests, broker faults, kill -9 under load, dead letters, batching, hot reload, deploy."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.engine import Engine

from conftest import RABBIT_URL
from fsml_nb.db import open_database, reading, served_predictions, serve_workers
from fsml_nb.serve import (FSML_COMMAND, ApiConfig, ModelLoadError, RabbitBroker, ServedModel, ServeWorker, SqlBroker, WorkerConfig,
                           add_serve_client, create_app, delete_rabbit_queue, live_workers, new_job,
                           write_linear_model_folder)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bright"
WEIGHTS = np.tile(np.arange(10, dtype=np.float32), (64, 1)) / 64  # bright images are "9", black ones tie at "0"


ENGINES: dict[str, Engine] = {}


def engine_of(db_url: str) -> Engine:
    """One engine per database for this test process, shared with the in-process API and workers.

    Opening a second engine on a SQLite file that this process has open drops the process's locks on it
    (an earlier fsml_nb.db file check closed a file descriptor; the db module no longer opens the file itself)."""
    if db_url not in ENGINES:
        ENGINES[db_url] = open_database(db_url)
    return ENGINES[db_url]


def png(width: int = 8, height: int = 8, value: int = 255) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def rabbit_url(rabbitmq_url: str) -> str:
    "The URL of a reachable RabbitMQ (conftest's `rabbitmq_url`), or skip/fail."
    return rabbitmq_url


@pytest.fixture
def prefix(request) -> Iterator[str]:
    "A queue prefix of this test's own; its RabbitMQ queues are deleted afterwards."
    name = f"fsml.test.{uuid.uuid4().hex[:10]}"
    yield name
    if "rabbit_url" in request.fixturenames or getattr(request.node, "callspec", None) and \
            request.node.callspec.params.get("broker_url") == "rabbitmq":
        try:
            delete_rabbit_queue(RABBIT_URL, f"{name}.{MODEL}")
        except Exception:  # RabbitMQ not reachable: nothing was declared
            pass


@pytest.fixture(params=["sqlite", "postgresql", "rabbitmq"])
def broker_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return request.getfixturevalue("rabbit_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_broker_url(request, tmp_path: Path) -> str:
    "A SQL broker: a SQLite file of the test's own, or the scratch PostgreSQL database."
    return f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_linear_model_folder(tmp_path / "bright-v1", WEIGHTS)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/fsml.db"


@pytest.fixture
def token(db_url: str) -> str:
    return add_serve_client(engine_of(db_url), "tests")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def api_server(config: ApiConfig) -> Iterator[str]:
    "The API under uvicorn in a thread; its base URL."
    import uvicorn

    port = free_port()
    app = create_app(config, engine_of(config.db_url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def worker_env(tmp_path: Path, db_url: str, broker_url: str) -> dict[str, str]:
    return {**os.environ, "FSML_HOME": str(tmp_path / "home"), "FSML_DB_URL": db_url, "FSML_BROKER_URL": broker_url,
            "FSML_BLOB_URL": str(tmp_path / "blobs"), "PYTHONPATH": str(ROOT)}


def start_worker(env: dict[str, str], prefix: str, name: str, *options: str, command: list[str] = FSML_COMMAND,
                 folder: Path | None = None, model: str = MODEL) -> subprocess.Popen:
    "A worker process (its output in NAME.log beside FSML_HOME)."
    source = ["--folder", str(folder)] if folder else []
    log = open(Path(env["FSML_HOME"]).parent / f"{name}.log", "w")
    return subprocess.Popen([*command, "serve", "worker", "--model", model, *source, "--queue-prefix", prefix,
                             "--name", name, *options], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_live(db_url: str, names: set[str], timeout: float = 180.0, model: str = MODEL) -> None:
    deadline = time.monotonic() + timeout
    while not names <= set(live_workers(engine_of(db_url), model)):
        assert time.monotonic() < deadline, f"workers {names} did not come up"
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stored_rows(db_url: str, role: str = "served") -> list:
    with reading(engine_of(db_url)) as connection:
        return connection.execute(select(served_predictions).where(served_predictions.c.role == role)).mappings().all()


async def _load(base_url: str, token: str, bodies: list, concurrency: int, during=None) -> list[tuple[int, dict]]:
    "POST every body to /v1/predict, `concurrency` at a time; answers in the bodies' order. `during(answered)` runs."
    results: list = [None] * len(bodies)
    answered = 0
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
        async def one(index, body):
            nonlocal answered
            async with limit:
                response = await (client.post("/v1/predict", json=body) if isinstance(body, list)
                                  else client.post("/v1/predict", content=body))
                results[index] = (response.status_code, response.json())
                answered += 1
                if during:
                    await asyncio.to_thread(during, answered)
        await asyncio.gather(*(one(index, body) for index, body in enumerate(bodies)))
    return results


def load(base_url: str, token: str, bodies: list, concurrency: int = 8, during=None) -> list[tuple[int, dict]]:
    return asyncio.run(_load(base_url, token, bodies, concurrency, during))


# ---------------------------------------------------------------------------------------------------------------
# 1. predictions through each broker, answered by a worker process, stored with the version
def test_predict_through_each_broker(broker_url: str, db_url: str, token: str, folder: Path, prefix: str,
                                     tmp_path: Path):
    env = worker_env(tmp_path, db_url, broker_url)
    worker = start_worker(env, prefix, "w1", folder=folder)
    try:
        wait_live(db_url, {"w1"})
        with api_server(ApiConfig(db_url, broker_url, queue_prefix=prefix)) as base:
            headers = {"Authorization": f"Bearer {token}"}
            image = httpx.post(f"{base}/v1/predict?model={MODEL}", content=png(), headers=headers, timeout=60)
            array = httpx.post(f"{base}/v1/predict", json=np.zeros((1, 8, 8)).tolist(), headers=headers, timeout=60)
            upload = httpx.post(f"{base}/v1/predict", files={"file": ("x.png", png(16, 16), "image/png")},
                                headers=headers, timeout=60)
            queued = httpx.post(f"{base}/v1/jobs", content=png(), headers=headers).json()
            deadline = time.monotonic() + 30
            while (job := httpx.get(f"{base}/v1/jobs/{queued['request_id']}", headers=headers).json())["status"] \
                    not in ("done", "failed"):
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
            assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
            assert httpx.get(f"{base}/readyz").status_code == 200
            metrics = httpx.get(f"{base}/metrics").text
        assert image.status_code == 200, image.text
        answer = image.json()
        version = ServedModel.load(folder).version_id
        assert (answer["label"], answer["model_version"], answer["worker"]) == ("9", version, "w1")
        assert len(answer["scores"]) == 10 and len(answer["request_id"]) == 32
        assert array.json().get("label") == "0" and upload.json().get("label") == "9", (array.text, upload.text)
        assert job["status"] == "done" and job["label"] == "9"
        assert f'fsml_serve_requests_total{{model="{MODEL}",outcome="ok"}} 3.0' in metrics
        rows = {row["request_id"]: row for row in stored_rows(db_url)}
        assert rows[answer["request_id"]]["model_version"] == version and rows[answer["request_id"]]["worker"] == "w1"
        assert len(rows) == 4
    finally:
        assert stop(worker) == 0  # SIGTERM: drains and exits cleanly
    with reading(engine_of(db_url)) as connection:
        assert connection.execute(select(serve_workers.c.status).where(serve_workers.c.name == "w1")).scalar() == "stopped"


# ---------------------------------------------------------------------------------------------------------------
# 2. clear errors for bad requests
@pytest.fixture
def running_worker(db_url: str, tmp_path: Path, folder: Path, prefix: str) -> Iterator[ServeWorker]:
    "A worker in a thread of this process, on the SQLite broker."
    worker = ServeWorker(db_url, f"sqlite:///{tmp_path}/queue.db", ServedModel.load(folder),
                         WorkerConfig(MODEL, queue_prefix=prefix, name="in-process", max_batch=8), engine=engine_of(db_url))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_live(db_url, {"in-process"})
    yield worker
    worker.stop()
    thread.join(30)


def test_bad_requests_get_one_clear_error_each(running_worker, db_url: str, token: str, tmp_path: Path, prefix: str):
    config = ApiConfig(db_url, f"sqlite:///{tmp_path}/queue.db", queue_prefix=prefix, max_body_bytes=200_000,
                       max_pixels=1_000_000)
    headers = {"Authorization": f"Bearer {token}"}
    with api_server(config) as base:
        def post(content=None, **kwargs):
            return httpx.post(f"{base}/v1/predict", content=content, **{"headers": headers, **kwargs})
        cases = {
            "not an image": (post(b"%PDF-1.4 definitely not an image"), 415, "not an image"),
            "huge image": (post(png(2000, 2000, 0)), 413, "over the limit of 1,000,000"),
            "huge body": (post(b"\0" * 300_000), 413, "over the limit of 200,000 bytes"),
            "no token": (post(png(), headers={}), 401, "token is required"),
            "wrong token": (post(png(), headers={"Authorization": "Bearer guessed"}), 401, "not valid"),
            "unknown model": (httpx.post(f"{base}/v1/predict?model=nope", content=png(), headers=headers), 404,
                              "unknown model 'nope'"),
            "wrong shape": (post(json=[[1.0, 2.0]]), 422, "has shape [1, 2]; this model takes [1, 8, 8]"),
            "bad json": (post(b"{", headers={**headers, "content-type": "application/json"}), 400, "not valid JSON"),
        }
        for case, (response, status, text) in cases.items():
            assert response.status_code == status and text in response.json()["error"], (case, response.text)
        assert post(png()).status_code == 200  # and good requests still work


def test_the_predict_routes_answer_every_case_as_before(running_worker, db_url: str, token: str, tmp_path: Path,
                                                        prefix: str):
    "POST /v1/predict and /v1/jobs skip FastAPI's routing (PredictRoutes): each answer, limit and count is unchanged."
    config = ApiConfig(db_url, f"sqlite:///{tmp_path}/queue.db", queue_prefix=prefix, max_body_bytes=200_000,
                       max_pixels=1_000_000)
    headers = {"Authorization": f"Bearer {token}"}

    def chunks(data: bytes, size: int = 50_000) -> Iterator[bytes]:  # no Content-Length: a chunked body
        yield from (data[start:start + size] for start in range(0, len(data), size))
    with api_server(config) as base:
        def post(path="/v1/predict", content=None, **kwargs):
            return httpx.post(f"{base}{path}", content=content, **{"headers": headers, "timeout": 60, **kwargs})
        huge_chunked = post(content=chunks(b"\0" * 300_000))
        chunked = post(content=chunks(png(200, 200), 100))
        cases = {
            "huge chunked body": (huge_chunked, 413, "over the limit of 200,000 bytes"),
            "huge body, no token": (post(content=b"\0" * 300_000, headers={}), 413, "over the limit of 200,000"),
            "wrong scheme": (post(content=png(), headers={"Authorization": f"Basic {token}"}), 401, "not valid"),
            "empty body": (post(content=b""), 422, "the body is empty"),
            "not an image": (post(content=b"GIF89a but not really"), 415, "not an image"),
            "JSON, not an array": (post(json={"inputs": 3}), 422, "send a JSON array"),
            "JSON, no body": (post(headers={**headers, "content-type": "application/json"}), 400, "not valid JSON"),
            "JSON, NaN": (post(content=b"[[[NaN]]]", headers={**headers, "content-type": "application/json"}), 422,
                          "has shape [1, 1, 1]"),
            "form without file": (post(files={"other": ("x.png", png(), "image/png")}), 422, "no file field"),
            "jobs, wrong token": (post("/v1/jobs", png(), headers={"Authorization": "Bearer guessed"}), 401, "not valid"),
            "jobs, huge image": (post("/v1/jobs", png(2000, 2000, 0)), 413, "over the limit of 1,000,000"),
            "jobs, unknown model": (post("/v1/jobs?model=nope", png()), 404, "unknown model 'nope'"),
        }
        for case, (response, status, text) in cases.items():
            assert response.status_code == status and text in response.json()["error"], (case, response.text)
            assert response.headers["content-type"] == "application/json", case
        good = {"chunked": chunked, "JSON object": post(json={"inputs": np.zeros((1, 8, 8)).tolist()}),
                "upload": post(files={"file": ("x.png", png(16, 16), "image/png")}),
                "blank model": post(f"/v1/predict?model=&model={MODEL}", png()),
                "last model wins": post("/v1/predict?model=nope&model=", png())}
        for case, response in good.items():
            assert response.status_code == 200, (case, response.text)
            assert int(response.headers["content-length"]) == len(response.content), case
        assert [response.json()["label"] for response in good.values()] == ["9", "0", "9", "9", "9"]
        queued = post("/v1/jobs", png())
        assert queued.status_code == 202 and queued.json()["status"] == "queued", queued.text
        assert queued.json()["url"] == f"/v1/jobs/{queued.json()['request_id']}"
        assert httpx.get(f"{base}/v1/predict").status_code == 405  # other methods: FastAPI's answers
        assert httpx.post(f"{base}/v1/models", headers=headers).status_code == 405
        schema = httpx.get(f"{base}/openapi.json").json()["paths"]
        for path in ("/v1/predict", "/v1/jobs"):
            body = schema[path]["post"]["requestBody"]["content"]
            assert {"image/png", "multipart/form-data", "application/json"} <= set(body), (path, body)
            assert "model" in {parameter["name"] for parameter in schema[path]["post"]["parameters"]}
        metrics = httpx.get(f"{base}/metrics").text
    assert f'fsml_serve_requests_total{{model="{MODEL}",outcome="ok"}} 5.0' in metrics, metrics
    assert f'fsml_serve_requests_total{{model="{MODEL}",outcome="input"}} 1.0' in metrics  # the NaN: the worker's
    assert f'fsml_serve_request_seconds_count{{model="{MODEL}"}} 6.0' in metrics


def test_a_full_queue_answers_503_with_retry_after(db_url: str, token: str, tmp_path: Path, folder: Path,
                                                   prefix: str):
    broker = f"sqlite:///{tmp_path}/queue.db"
    idle = ServeWorker(db_url, broker, ServedModel.load(folder), WorkerConfig(MODEL, queue_prefix=prefix, name="idle"),
                       engine=engine_of(db_url))
    idle.status = "ready"
    idle.write_heartbeat()  # live, but takes no jobs: the queue only grows
    with api_server(ApiConfig(db_url, broker, queue_prefix=prefix, max_queue=2, retry_after_seconds=3)) as base:
        headers = {"Authorization": f"Bearer {token}"}
        accepted = [httpx.post(f"{base}/v1/jobs", content=png(), headers=headers).status_code for _ in range(2)]
        refused = httpx.post(f"{base}/v1/jobs", content=png(), headers=headers)
    assert accepted == [202, 202]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "holds 2 jobs, its limit is 2" in refused.json()["error"]
    assert SqlBroker(broker).depth(f"{prefix}.{MODEL}") == 2  # the refused job was not queued


def wait_until_ready(base: str, seconds: float = 60) -> None:
    "Wait until the API at `base` says it is ready again (a broker came back)."
    deadline = time.monotonic() + seconds
    while httpx.get(f"{base}/readyz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{base}/readyz", timeout=30).text
        time.sleep(0.2)


@pytest.mark.parametrize("unreachable", ["amqp://guest:guest@127.0.0.1:1/%2F", "postgresql://postgres@127.0.0.1:1/x"])
def test_an_unreachable_broker_makes_the_api_not_ready(unreachable: str, db_url: str, token: str, tmp_path: Path,
                                                       folder: Path, prefix: str):
    idle = ServeWorker(db_url, f"sqlite:///{tmp_path}/queue.db", ServedModel.load(folder),
                       WorkerConfig(MODEL, queue_prefix=prefix, name="idle"), engine=engine_of(db_url))
    idle.status = "ready"
    idle.write_heartbeat()
    with api_server(ApiConfig(db_url, unreachable, queue_prefix=prefix)) as base:
        ready = httpx.get(f"{base}/readyz")
        predict = httpx.post(f"{base}/v1/predict", content=png(), headers={"Authorization": f"Bearer {token}"})
    assert ready.status_code == 503 and any("unavailable" in problem for problem in ready.json()["problems"])
    assert predict.status_code == 503 and "unavailable" in predict.json()["error"] and predict.headers["retry-after"]
    worker = subprocess.run([*FSML_COMMAND, "serve", "worker", "--model", MODEL, "--folder", str(folder)],
                            env=worker_env(tmp_path, db_url, unreachable), capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1 and worker.stderr.startswith("fsml: error: the broker at"), worker.stderr
    assert "unavailable" in worker.stderr and "Traceback" not in worker.stderr


# ---------------------------------------------------------------------------------------------------------------
# 3. dynamic batching
def test_a_crafted_manifest_cannot_point_outside_its_folder(tmp_path: Path):
    folder = write_linear_model_folder(tmp_path / "model", WEIGHTS)
    manifest = json.loads((folder / "manifest.json").read_text())
    (tmp_path / "outside.onnx").write_bytes((folder / "model.onnx").read_bytes())
    crafted = {**manifest, "serving": {**manifest["serving"], "file": "../outside.onnx"}}
    (folder / "manifest.json").write_text(json.dumps(crafted))
    with pytest.raises(ModelLoadError, match="outside the folder"):
        ServedModel.load(folder)
    golden = {**manifest["serving"]["golden"], "inputs": "/etc/hostname"}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "serving": {**manifest["serving"], "golden": golden}}))
    with pytest.raises(ModelLoadError, match="outside the folder"):
        ServedModel.load(folder).check_golden()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert ServedModel.load(folder).check_golden() < 1e-4


def test_sql_broker_batches_up_to_the_limit_and_waits_only_when_asked(tmp_path: Path):
    broker = SqlBroker(f"sqlite:///{tmp_path}/queue.db")
    for _ in range(5):
        broker.publish("q", new_job(MODEL, "array", [0]))
    assert len(broker.take("q", "w", limit=3)) == 3
    assert len(broker.take("q", "w", limit=3)) == 2
    broker.publish("q", new_job(MODEL, "array", [0]))
    started = time.monotonic()
    assert len(broker.take("q", "w", limit=4, wait_seconds=0.0)) == 1
    assert time.monotonic() - started < 0.5  # no wait for company at low load
    broker.publish("q", new_job(MODEL, "array", [0]))
    threading.Timer(0.05, lambda: broker.publish("q", new_job(MODEL, "array", [0]))).start()
    assert len(broker.take("q", "w", limit=4, wait_seconds=0.5)) == 2  # waited, and the second joined


def test_rabbit_broker_batches_up_to_the_prefetch(rabbit_url: str, prefix: str):
    from fsml_nb.serve import RabbitClient

    queue = f"{prefix}.{MODEL}"
    client = RabbitClient(rabbit_url, on_reply=lambda reply: None)
    worker = RabbitBroker(rabbit_url)
    try:
        for _ in range(5):
            client.publish(queue, new_job(MODEL, "array", [0]))
        first = worker.take(queue, "w", limit=3, wait_seconds=0.5)
        assert len(first) == 3 and [delivery.attempt for delivery in first] == [1, 1, 1]
        worker.finish_many("w", [(delivery, {"request_id": delivery.request_id}) for delivery in first])
        second = worker.take(queue, "w", limit=3, wait_seconds=0.2)
        assert len(second) == 2
        worker.finish_many("w", [(delivery, {"request_id": delivery.request_id}) for delivery in second])
        assert client.depth(queue) == 0
    finally:
        worker.close()
        client.close()


def test_rabbit_publishes_from_the_event_loop_share_wake_ups(rabbit_url: str, prefix: str):
    "Jobs published at once from the event loop wake the connection's thread once for many, and all are confirmed."
    from fsml_nb.serve import RabbitClient

    queue = f"{prefix}.{MODEL}"
    client = RabbitClient(rabbit_url, on_reply=lambda reply: None)
    wake_ups = []
    connection = client.connection
    real_wake = connection.add_callback_threadsafe
    connection.add_callback_threadsafe = lambda callback: (wake_ups.append(callback), real_wake(callback))

    async def publish_all(count: int) -> list:
        return await asyncio.gather(*(client.publish_async(queue, new_job(MODEL, "array", [index]))
                                      for index in range(count)), return_exceptions=True)
    try:
        client.depth(queue)  # declared first: a publish to a queue not yet declared would wait for the declaration
        outcomes = asyncio.run(publish_all(300))
        assert outcomes == [None] * 300
        assert 1 <= len(wake_ups) < 300 and not client.outbox, len(wake_ups)
        deadline = time.monotonic() + 10
        while client.depth(queue) < 300:
            assert time.monotonic() < deadline, client.depth(queue)
            time.sleep(0.1)
        assert client.depth(queue) == 300
    finally:
        client.close()


def test_a_batching_worker_answers_like_one_that_does_not(running_worker, db_url: str, token: str, tmp_path: Path,
                                                          prefix: str):
    values = list(range(0, 256, 8)) * 3
    with api_server(ApiConfig(db_url, f"sqlite:///{tmp_path}/queue.db", queue_prefix=prefix)) as base:
        results = load(base, token, [png(value=value) for value in values], concurrency=16)
    assert [status for status, _ in results] == [200] * len(values)
    model = running_worker.model
    alone = [str(model.run(np.full((1, 1, 8, 8), value / 255, np.float32))[0].argmax()) for value in values]
    assert [answer["label"] for _, answer in results] == alone  # batched answers equal one-at-a-time answers
    assert {answer["model_version"] for _, answer in results} == {model.version_id}
    assert running_worker.batches < running_worker.served  # some batches held several jobs


def test_a_rabbitmq_worker_replies_before_storing_and_acknowledges_after(rabbit_url: str, db_url: str, folder: Path,
                                                                          prefix: str, monkeypatch):
    "The client does not wait for the store; a worker that dies before storing leaves the message to the next one."
    from fsml_nb import serve
    from fsml_nb.serve import RabbitClient

    queue, replies = f"{prefix}.{MODEL}", []
    client = RabbitClient(rabbit_url, on_reply=replies.append)
    config = WorkerConfig(MODEL, queue_prefix=prefix, name="reply-first")
    first = ServeWorker(db_url, rabbit_url, ServedModel.load(folder), config, engine=engine_of(db_url))
    store = serve.store_predictions

    def store_dies_once_replied(engine, rows):
        deadline = time.monotonic() + 30
        while not replies:  # the reply reached the API before anything was stored
            assert time.monotonic() < deadline, "no reply came before the store"
            time.sleep(0.01)
        raise RuntimeError("the worker died before storing")
    try:
        job = new_job(MODEL, "array", np.ones((1, 8, 8)).tolist())
        client.publish(queue, job)
        monkeypatch.setattr(serve, "store_predictions", store_dies_once_replied)
        with pytest.raises(RuntimeError, match="died before storing"):
            first.step()
        assert [reply["label"] for reply in replies] == ["9"] and stored_rows(db_url) == []
        first.broker.close()  # the dead worker's connection goes: its unacknowledged message comes back
        monkeypatch.setattr(serve, "store_predictions", store)
        second = ServeWorker(db_url, rabbit_url, ServedModel.load(folder), config, engine=engine_of(db_url))
        try:
            deadline = time.monotonic() + 30
            while not second.step():
                assert time.monotonic() < deadline, "the message did not come back"
        finally:
            second.broker.close()
        assert [(row["request_id"], row["label"]) for row in stored_rows(db_url)] == [(job["id"], "9")]
        assert client.depth(queue) == 0  # acknowledged once stored
    finally:
        client.close()


def test_a_sql_worker_replies_before_storing_and_a_crash_between_leaves_the_job_to_the_next(
        sql_broker_url: str, db_url: str, token: str, folder: Path, prefix: str, monkeypatch):
    "The client has its answer before the store; a worker that dies between the two: the next one stores it, once."
    from fsml_nb import serve

    headers = {"Authorization": f"Bearer {token}"}
    config = WorkerConfig(MODEL, queue_prefix=prefix, name="reply-first", lease_seconds=1.0)
    first = ServeWorker(db_url, sql_broker_url, ServedModel.load(folder), config, engine=engine_of(db_url))
    store, answers, seen_while_leased = serve.store_predictions, [], []
    first.status = "ready"
    first.write_heartbeat()  # the API sends jobs only to a model a live worker serves
    with api_server(ApiConfig(db_url, sql_broker_url, queue_prefix=prefix, lease_seconds=1.0, request_timeout=60)) as base:
        def store_dies_once_replied(engine, rows):
            deadline = time.monotonic() + 30
            while not answers:  # the client had its answer before anything was stored
                assert time.monotonic() < deadline, "no answer came before the store"
                time.sleep(0.01)
            job = httpx.get(f"{base}/v1/jobs/{rows[0]['request_id']}", headers=headers).json()
            seen_while_leased.append((job["status"], job.get("label"), first.broker.state(rows[0]["request_id"])))
            raise RuntimeError("the worker died before storing")

        client = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=60)))
        client.start()
        monkeypatch.setattr(serve, "store_predictions", store_dies_once_replied)
        try:
            deadline = time.monotonic() + 30
            with pytest.raises(RuntimeError, match="died before storing"):
                while not first.step():
                    assert time.monotonic() < deadline and not answers, f"the job did not come: {answers}"
        finally:
            client.join(60)
            first.broker.close()
        [answer] = answers
        assert answer.status_code == 200 and answer.json()["label"] == "9" and stored_rows(db_url) == []
        assert seen_while_leased == [("done", "9", "running")]  # answered: GET /v1/jobs says so before the store
        monkeypatch.setattr(serve, "store_predictions", store)
        second = ServeWorker(db_url, sql_broker_url, ServedModel.load(folder), config, engine=engine_of(db_url))
        try:
            deadline = time.monotonic() + 30
            while not second.step():  # the lease runs out, the job comes back (attempt 2): computed, stored, ended
                assert time.monotonic() < deadline, "the job did not come back"
            request_id = answer.json()["request_id"]
            assert second.broker.state(request_id) == "done"
            assert [(row["request_id"], row["label"]) for row in stored_rows(db_url)] == [(request_id, "9")]
            job = httpx.get(f"{base}/v1/jobs/{request_id}", headers=headers).json()
            assert (job["status"], job["label"]) == ("done", "9")
            assert second.step() == 0  # nothing comes back again
        finally:
            second.broker.close()
    assert len(stored_rows(db_url)) == 1


# ---------------------------------------------------------------------------------------------------------------
# 4. kill -9 under load, and poison inputs
@pytest.mark.parametrize("broker_kind", ["sqlite", "rabbitmq"])
def test_kill_9_of_a_worker_under_load_loses_no_request(broker_kind: str, db_url: str, token: str, folder: Path,
                                                         prefix: str, tmp_path: Path, request):
    broker = f"sqlite:///{tmp_path}/queue.db" if broker_kind == "sqlite" else request.getfixturevalue("rabbit_url")
    env = worker_env(tmp_path, db_url, broker)
    workers = [start_worker(env, prefix, f"k{index}", "--max-batch", "4", "--lease-seconds", "2", folder=folder)
               for index in range(2)]
    killed = []

    def kill_one(answered: int) -> None:
        if answered >= 40 and not killed:
            workers[0].send_signal(signal.SIGKILL)
            killed.append(answered)
    try:
        wait_live(db_url, {"k0", "k1"})
        with api_server(ApiConfig(db_url, broker, queue_prefix=prefix)) as base:
            results = load(base, token, [png(value=index % 256) for index in range(240)], concurrency=16,
                           during=kill_one)
    finally:
        for worker in workers:
            stop(worker)
    assert killed and workers[0].returncode == -signal.SIGKILL
    failed = [(status, answer) for status, answer in results if status != 200]
    assert len(results) == 240 and failed == []
    assert len(stored_rows(db_url)) == 240  # each request stored once, even those delivered twice


POISON_WORKER = [sys.executable, "-c", """
import os, sys
import numpy as np
from fsml_nb import serve
run = serve.ServedModel.run
def crash_on_poison(self, inputs):
    if np.any(inputs == 666):
        os._exit(9)  # dies in the middle of the batch, as a segfault in native code would
    return run(self, inputs)
serve.ServedModel.run = crash_on_poison
from fsml_nb.cli import main
main(sys.argv[1:])
"""]


@pytest.mark.parametrize("broker_kind", ["sqlite", "rabbitmq"])
def test_a_poison_input_is_dead_lettered_and_its_client_told(broker_kind: str, db_url: str, token: str,
                                                             folder: Path, prefix: str, tmp_path: Path, request):
    broker = f"sqlite:///{tmp_path}/queue.db" if broker_kind == "sqlite" else request.getfixturevalue("rabbit_url")
    env = worker_env(tmp_path, db_url, broker)
    options = ("--max-attempts", "2", "--lease-seconds", "1")
    started = [start_worker(env, prefix, "p0", *options, command=POISON_WORKER, folder=folder)]
    answer: dict = {}
    try:
        wait_live(db_url, {"p0"})
        with api_server(ApiConfig(db_url, broker, queue_prefix=prefix, max_attempts=2, lease_seconds=1,
                                  live_seconds=30)) as base:
            headers = {"Authorization": f"Bearer {token}"}
            poison = threading.Thread(target=lambda: answer.update(response=httpx.post(
                f"{base}/v1/predict", json=np.full((1, 8, 8), 666.0).tolist(), headers=headers, timeout=300)))
            poison.start()
            deadline = time.monotonic() + 300
            while poison.is_alive():  # a supervisor's job: start a worker again each time one dies
                assert time.monotonic() < deadline, "the poison request got no answer"
                if started[-1].poll() is not None:
                    started.append(start_worker(env, prefix, f"p{len(started)}", *options, command=POISON_WORKER,
                                                folder=folder))
                time.sleep(0.1)
            started.append(start_worker(env, prefix, "healthy", *options, folder=folder))
            wait_live(db_url, {"healthy"})
            healthy = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=60)
    finally:
        for worker in started:
            stop(worker)
    response = answer["response"]
    assert response.status_code == 500 and "moved to the dead letters" in response.json()["error"], response.text
    crashed = [worker for worker in started if worker.returncode == 9]
    assert len(crashed) == 2  # two attempts, each killed a worker; then no more
    assert healthy.status_code == 200 and healthy.json()["label"] == "9"


# ---------------------------------------------------------------------------------------------------------------
# 5. hot swap under load; a version failing its golden check is refused
def test_a_swap_under_load_fails_no_request(running_worker, db_url: str, token: str, tmp_path: Path, prefix: str):
    darker = write_linear_model_folder(tmp_path / "dark", WEIGHTS[:, ::-1].copy())
    tampered = write_linear_model_folder(tmp_path / "tampered", WEIGHTS)
    np.save(tampered / "golden" / "outputs.npy", np.load(tampered / "golden" / "outputs.npy") + 1)
    first = running_worker.model.version_id
    swapped = []
    once = threading.Lock()  # the load's threads all call `during`: only one of them swaps

    def swap(answered: int) -> None:
        with once:
            if answered >= 100 and not swapped:
                swapped.append(running_worker.swap_model(darker, "dark-v2"))
    with api_server(ApiConfig(db_url, f"sqlite:///{tmp_path}/queue.db", queue_prefix=prefix)) as base:
        results = load(base, token, [png()] * 300, concurrency=8, during=swap)
        refused = running_worker.swap_model(tampered, "tampered-v3")
        time.sleep(1.5)  # a heartbeat writes the message
        ready = httpx.get(f"{base}/readyz").json()
    assert swapped == [True] and [status for status, _ in results if status != 200] == []
    versions = [answer["model_version"] for _, answer in results]
    assert set(versions) == {first, "dark-v2"}
    labels = {answer["model_version"]: answer["label"] for _, answer in results}
    assert labels == {first: "9", "dark-v2": "0"}  # each answer is wholly from the version it names
    assert refused is False and running_worker.model.version_id == "dark-v2"
    assert any("fails its golden check" in message for message in ready["models"][MODEL]["messages"])


def test_the_shadow_challenger_is_stored_never_returned(db_url: str, token: str, tmp_path: Path, folder: Path,
                                                        prefix: str):
    challenger = ServedModel.load(write_linear_model_folder(tmp_path / "dark", WEIGHTS[:, ::-1].copy()), "dark-v2")
    broker = f"sqlite:///{tmp_path}/queue.db"
    worker = ServeWorker(db_url, broker, ServedModel.load(folder, "bright-v1"),
                         WorkerConfig(MODEL, queue_prefix=prefix, name="shadowed"), shadow=challenger,
                         engine=engine_of(db_url))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_live(db_url, {"shadowed"})
    with api_server(ApiConfig(db_url, broker, queue_prefix=prefix, shadow_fraction=1.0)) as base:
        results = load(base, token, [png()] * 5)
    worker.stop()
    thread.join(30)
    assert {(answer["model_version"], answer["label"]) for _, answer in results} == {("bright-v1", "9")}
    shadow = stored_rows(db_url, "shadow")
    assert len(shadow) == 5 and {(row["model_version"], row["label"]) for row in shadow} == {("dark-v2", "0")}


# ---------------------------------------------------------------------------------------------------------------
# 7. fsml serve up: one supervisor, an API and two workers
def test_serve_up_restarts_a_killed_worker_and_stops_on_sigterm(db_url: str, token: str, folder: Path,
                                                                 prefix: str, tmp_path: Path):
    port = free_port()
    env = worker_env(tmp_path, db_url, f"sqlite:///{tmp_path}/queue.db")
    supervisor = subprocess.Popen([*FSML_COMMAND, "serve", "up", "--model", MODEL, "--folder", str(folder),
                                   "--workers", "2", "--port", str(port), "--queue-prefix", prefix], env=env)
    base = f"http://127.0.0.1:{port}"
    engine = engine_of(db_url)
    try:
        deadline = time.monotonic() + 90
        while len(live_workers(engine, MODEL)) < 2 or _status(f"{base}/readyz") != 200:
            assert time.monotonic() < deadline and supervisor.poll() is None, "serve up did not become ready"
            time.sleep(0.2)
        answer = httpx.post(f"{base}/v1/predict", content=png(), headers={"Authorization": f"Bearer {token}"},
                            timeout=60)
        assert answer.status_code == 200 and answer.json()["label"] == "9"
        original = set(live_workers(engine, MODEL))
        with reading(engine) as connection:
            pids = connection.execute(select(serve_workers.c.pid)).scalars().all()
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not (set(live_workers(engine, MODEL, live_seconds=2)) - original) or \
                len(live_workers(engine, MODEL, live_seconds=2)) < 2:
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.2)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(60)
    assert code == 0
    assert _status(f"{base}/healthz") is None  # the API is gone too


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# hot reload on promotion through the registry, and deploy
@pytest.fixture(scope="module")
def digits_registry(tmp_path_factory):
    "A store whose registry holds two versions of a digits model (different training lengths)."
    from fsml_nb.data import import_digits
    from fsml_nb.registry import ModelRegistry
    from fsml_nb.store import Store
    from fsml_nb.train import TrainConfig, fit, timm_spec

    folder = tmp_path_factory.mktemp("registry")
    store = Store(f"sqlite:///{folder}/fsml.db", str(folder / "blobs"))
    digits = import_digits(store)
    registry = ModelRegistry(store)
    versions = []
    for steps in (10, 20):  # a tiny timm model, briefly: two versions with different weights
        checkpoint = folder / f"digits-{steps}.safetensors"
        fit(timm_spec("test_resnet", 10, in_chans=1, small_input=True), digits, store=store, progress=False,
            config=TrainConfig(max_steps=steps, batch_size=64, val_fraction=0), checkpoint_path=checkpoint)
        versions.append(registry.register(checkpoint, "digits", reason=f"{steps} steps"))
    registry.promote("digits", versions[0].id, reason="first")
    yield registry, versions, folder
    store.close()


def test_a_promotion_reloads_running_workers_without_a_failed_request(digits_registry, prefix: str, tmp_path: Path):
    from fsml_nb.serve import deploy

    registry, (first, second), folder = digits_registry
    db_url = f"sqlite:///{folder}/fsml.db"
    ENGINES[db_url] = registry.engine  # the store's engine: the only one of this process on that file
    token = add_serve_client(registry.engine, f"deploy-{prefix}")
    env = {**worker_env(tmp_path, db_url, f"sqlite:///{tmp_path}/queue.db"), "FSML_BLOB_URL": str(folder / "blobs")}
    workers = [start_worker(env, prefix, f"r{index}", "--ref", "digits@champion", "--max-batch", "4", model="digits")
               for index in range(2)]
    report = {}

    once = threading.Lock()  # the load's threads all call `during`: only one of them deploys

    def deploy_once(answered: int) -> None:
        with once:
            if answered >= 30 and not report:
                report["deploy"] = deploy(registry, "digits", "2", min_agreement=90.0, tolerance=100.0,
                                          wait_seconds=90, reason="test")  # gates' arithmetic: see the notebook
    try:
        wait_live(db_url, {"r0", "r1"}, model="digits")
        config = ApiConfig(db_url, f"sqlite:///{tmp_path}/queue.db", queue_prefix=prefix)
        with api_server(config) as base:
            assert httpx.get(f"{base}/readyz").json()["models"]["digits"]["champion"] == first.id
            results = load(base, token, [png(value=index * 7 % 256) for index in range(400)], concurrency=8,
                           during=deploy_once)
            ready = httpx.get(f"{base}/readyz")
        deployed = report["deploy"]
        assert deployed.succeeded, deployed._repr_markdown_()
        assert set(deployed.workers) == {"r0", "r1"} and set(deployed.workers.values()) == {second.id}
        assert [status for status, _ in results if status != 200] == []  # zero failed requests during the swap
        assert {answer["model_version"] for _, answer in results} == {first.id, second.id}
        assert ready.status_code == 200 and ready.json()["models"]["digits"]["champion"] == second.id
    finally:
        for worker in workers:
            stop(worker)
    # with no live worker to follow it, a deploy is rolled back, and the log says why
    late = deploy(registry, "digits", "1", min_agreement=90.0, tolerance=100.0, wait_seconds=3, reason="test")
    assert late.promoted and late.rolled_back and "no live worker" in late.message
    last = registry.history("digits", "champion")[-1]
    assert last.kind == "rollback" and last.to_version_id == second.id and "no live worker" in last.reason


# ---------------------------------------------------------------------------------------------------------------
# 8. the broker connection drops mid-run and comes back (a real TCP proxy cut and restored; the servers keep running)
class TcpProxy:
    "A TCP forwarder from a local port to `upstream`; `cut()` closes every connection and refuses new ones; `stall()` "
    "keeps them open but forwards nothing (a network blackhole)."

    def __init__(self, upstream: tuple[str, int]):
        self.upstream, self.port = upstream, free_port()
        self.stalled = threading.Event()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        "Listen again on the same port."
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        "Stop listening and reset every forwarded connection."
        listener, self.listener = self.listener, None
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(); close() alone would not
        except OSError:
            pass
        listener.close()
        with self.lock:
            for each in self.sockets:
                try:
                    each.shutdown(socket.SHUT_RDWR)
                except OSError:  # closed already
                    pass
                each.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets |= {client, server}
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def stall(self) -> None:
        "Keep every connection open and accept new ones, but drop all bytes from now on: a silent network."
        self.stalled.set()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.stalled.is_set():  # read and dropped: the sender's TCP sees no trouble
                    continue
                target.sendall(data)
        except OSError:
            pass
        for each in (source, target):
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self.listener is not None:
            self.cut()

    def unstall(self) -> None:
        "Forward again (on connections made from now on: the stalled ones lost bytes and are garbage)."
        with self.lock:
            stale, self.sockets = self.sockets, set()
        for each in stale:
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            each.close()
        self.stalled.clear()


def _proxied(url: str, port: int) -> tuple[str, tuple[str, int]]:
    "The URL through a proxy on `port`, and the (host, port) it forwards to."
    from sqlalchemy.engine import make_url

    parsed = make_url(url.replace("amqp://", "postgresql://", 1))  # only to read the host and port
    upstream = (parsed.host or "127.0.0.1", parsed.port or (5672 if url.startswith("amqp") else 5432))
    return url.replace(f"@{parsed.host}:{upstream[1]}", f"@127.0.0.1:{port}", 1), upstream


@pytest.mark.parametrize("broker_kind", ["postgresql", "rabbitmq"])
def test_a_broker_outage_mid_run_is_reported_and_survived(broker_kind: str, db_url: str, token: str, folder: Path,
                                                          prefix: str, tmp_path: Path, request):
    direct = request.getfixturevalue("postgres_url" if broker_kind == "postgresql" else "rabbit_url")
    proxy = TcpProxy(_proxied(direct, 1)[1])
    broker, _ = _proxied(direct, proxy.port)
    env = worker_env(tmp_path, db_url, broker)
    worker = start_worker(env, prefix, "o1", "--max-batch", "4", "--lease-seconds", "2", folder=folder)
    headers = {"Authorization": f"Bearer {token}"}
    timeout = 8.0
    accepted: list[str] = []  # request ids the API accepted: each must end up answered and stored
    try:
        wait_live(db_url, {"o1"})
        with api_server(ApiConfig(db_url, broker, queue_prefix=prefix, request_timeout=timeout, lease_seconds=2)) as base:
            assert httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30).status_code == 200
            outcomes: list = []
            running = threading.Event()
            running.set()

            def traffic() -> None:  # predictions and queued jobs, before, during and after the outage
                while running.is_set():
                    started = time.monotonic()
                    try:
                        answer = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=60)
                        queued = httpx.post(f"{base}/v1/jobs", content=png(), headers=headers, timeout=60)
                    except httpx.HTTPError as error:
                        outcomes.append(("transport", str(error), time.monotonic() - started))
                        continue
                    outcomes.append((answer.status_code, answer.json(), time.monotonic() - started))
                    if answer.status_code in (200, 504):  # 504: accepted, still queued (its id says where)
                        accepted.append(answer.json()["request_id"])
                    if queued.status_code == 202:
                        accepted.append(queued.json()["request_id"])
                    time.sleep(0.02)
            load_thread = threading.Thread(target=traffic, daemon=True)
            load_thread.start()
            time.sleep(1.0)
            proxy.cut()
            time.sleep(1.5)  # both sides notice
            started = time.monotonic()
            ready = httpx.get(f"{base}/readyz", timeout=30)
            refused = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30)
            refused_seconds = time.monotonic() - started
            time.sleep(1.0)
            proxy.restore()
            wait_until_ready(base)
            back = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30)
            time.sleep(1.0)
            running.clear()
            load_thread.join(90)
            deadline = time.monotonic() + 60
            while not set(accepted) <= {row["request_id"] for row in stored_rows(db_url)}:
                assert time.monotonic() < deadline, "accepted jobs were lost"
                time.sleep(0.2)
            finished = [httpx.get(f"{base}/v1/jobs/{request_id}", headers=headers).json()["status"]
                        for request_id in accepted]
    finally:
        stop(worker)
        proxy.close()
    assert ready.status_code == 503 and any("broker" in problem for problem in ready.json()["problems"]), ready.text
    assert refused.status_code == 503 and "broker" in refused.json()["error"] and refused.headers["retry-after"]
    assert refused_seconds < timeout, refused_seconds  # a clear error at once, not a wait for the timeout
    assert back.status_code == 200 and back.json()["label"] == "9", back.text
    statuses = {status for status, _, _ in outcomes}
    assert statuses <= {200, 503, 504}, outcomes
    assert 200 in statuses  # a request in flight at the cut may be answered after the restore; the probe got the 503
    assert max(seconds for _, _, seconds in outcomes) < 2 * timeout + 5  # never a hang past the request timeout
    assert all(status == 503 and "broker" in answer["error"] for status, answer, _ in outcomes if status != 200 and
               status != 504)
    assert finished == ["done"] * len(accepted) and len(accepted) > 4
    assert worker.returncode == 0  # the same worker process served before and after the outage


def test_a_silent_rabbitmq_is_noticed_in_seconds(rabbit_url: str, db_url: str, token: str, folder: Path, prefix: str,
                                                 tmp_path: Path):
    "A blackhole between the API and RabbitMQ (the socket stays open, nothing comes back): the API says not ready and "
    "answers 503 within seconds, not after pika's 30 s heartbeat; once the network is back it serves again."
    proxy = TcpProxy(_proxied(rabbit_url, 1)[1])
    broker, _ = _proxied(rabbit_url, proxy.port)
    worker = start_worker(worker_env(tmp_path, db_url, rabbit_url), prefix, "s1", folder=folder)  # direct: unaffected
    headers = {"Authorization": f"Bearer {token}"}
    try:
        wait_live(db_url, {"s1"})
        with api_server(ApiConfig(db_url, broker, queue_prefix=prefix, request_timeout=20)) as base:
            assert httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30).status_code == 200
            assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200
            proxy.stall()
            started = time.monotonic()
            while (ready := httpx.get(f"{base}/readyz", timeout=30)).status_code == 200:
                assert time.monotonic() - started < 15, "the API did not notice the silent broker within 15 s"
                time.sleep(0.1)
            noticed = time.monotonic() - started
            refused_at = time.monotonic()
            refused = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30)
            refused_seconds = time.monotonic() - refused_at
            proxy.unstall()
            wait_until_ready(base)
            back = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30)
    finally:
        stop(worker)
        proxy.close()
    assert noticed < 6.0, noticed  # silence_seconds (3 s) after the last unanswered probe, which goes out every second
    assert any("silent" in problem or "broker" in problem for problem in ready.json()["problems"]), ready.text
    assert refused.status_code == 503 and refused.headers["retry-after"] and refused_seconds < 2, refused.text
    assert back.status_code == 200 and back.json()["label"] == "9", back.text


def test_postgresql_wakes_workers_and_the_api_by_notify(postgres_url: str, db_url: str, token: str, folder: Path,
                                                         prefix: str, tmp_path: Path):
    "With a slow fallback poll (2 s), a prediction through PostgreSQL is answered at once: LISTEN/NOTIFY wakes both "
    "the worker (a job) and the API (a reply)."
    env = {**worker_env(tmp_path, db_url, postgres_url)}
    worker = start_worker(env, prefix, "n1", folder=folder)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        wait_live(db_url, {"n1"})
        with api_server(ApiConfig(db_url, postgres_url, queue_prefix=prefix, request_timeout=20)) as base:
            assert httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30).status_code == 200
            seconds = []
            for _ in range(10):
                started = time.monotonic()
                answer = httpx.post(f"{base}/v1/predict", content=png(), headers=headers, timeout=30)
                seconds.append(time.monotonic() - started)
                assert answer.status_code == 200 and answer.json()["label"] == "9", answer.text
    finally:
        stop(worker)
    broker, publisher = SqlBroker(postgres_url, poll_seconds=2.0), SqlBroker(postgres_url)
    try:
        broker.data_version()  # listening from here
        started = time.monotonic()
        threading.Timer(0.3, lambda: publisher.publish(f"{prefix}.other", new_job("other", "array", [1]))).start()
        broker.wait_for_commit(None, 5.0)
        woken = time.monotonic() - started
    finally:
        time.sleep(0.5)  # the timer's publish is done
        broker.close()
        publisher.close()
    assert sorted(seconds)[5] < 0.2, seconds  # the median: no 0.25 s poll on the way
    assert 0.25 < woken < 1.5, woken  # woken by the NOTIFY (0.3 s), not by the 2 s poll


def test_an_idle_rabbitmq_worker_notices_a_silent_broker_in_seconds(rabbit_url: str, db_url: str, folder: Path,
                                                                     prefix: str):
    "A worker idle on an empty queue probes RabbitMQ: a blackhole makes it reconnect (and say so) within seconds, "
    "not after the 30 s heartbeat; once the network is back it serves again."
    from fsml_nb.serve import RabbitClient

    proxy = TcpProxy(_proxied(rabbit_url, 1)[1])
    broker, _ = _proxied(rabbit_url, proxy.port)
    replies: list = []
    client = RabbitClient(rabbit_url, on_reply=replies.append)  # direct: unaffected
    worker = ServeWorker(db_url, broker, ServedModel.load(folder), WorkerConfig(MODEL, queue_prefix=prefix, name="idle"),
                         engine=engine_of(db_url))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()

    def answered(count: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while len(replies) < count:
            assert time.monotonic() < deadline, "no answer"
            time.sleep(0.05)
    try:
        client.publish(f"{prefix}.{MODEL}", new_job(MODEL, "array", np.ones((1, 8, 8)).tolist()))
        answered(1)
        proxy.stall()
        started = time.monotonic()
        while worker.status != "waiting":
            assert time.monotonic() - started < 15, "the worker did not notice the silent broker within 15 s"
            time.sleep(0.05)
        noticed = time.monotonic() - started
        message = worker.message
        proxy.unstall()
        client.publish(f"{prefix}.{MODEL}", new_job(MODEL, "array", np.ones((1, 8, 8)).tolist()))
        answered(2, 90)
    finally:
        worker.stop()
        thread.join(60)
        client.close()
        proxy.close()
    assert noticed < 6.0, noticed  # idle for probe_seconds (1 s), then silence_seconds (3 s) without an answer
    assert "went silent" in message, message
    assert [reply["label"] for reply in replies] == ["9", "9"]


def test_a_probe_sent_before_a_long_inference_is_not_taken_for_silence(rabbit_url: str, prefix: str):
    "The probe's answer is judged after a pump: a worker back from a batch longer than the silence limit reads it then."
    from fsml_nb.serve import RabbitClient

    queue = f"{prefix}.{MODEL}"
    client = RabbitClient(rabbit_url, on_reply=lambda reply: None)
    worker = RabbitBroker(rabbit_url, silence_seconds=1.0, probe_seconds=0.2)
    try:
        client.publish(queue, new_job(MODEL, "array", [0]))
        taken = worker.take(queue, "w", limit=1, wait_seconds=0.5)
        assert len(taken) == 1
        worker.send_probe()
        assert worker.probe_sent_at is not None
        time.sleep(2.0)  # a batch twice as long as the silence limit, with no pump (as a worker runs its model)
        assert worker.take(queue, "w", limit=1) == []  # idle again: the answer is read, no BrokerUnavailableError
        assert worker.probe_sent_at is None
        worker.finish_many("w", [(taken[0], {"request_id": taken[0].request_id})])
        assert client.depth(queue) == 0
    finally:
        worker.close()
        client.close()


def test_a_sql_broker_empties_finished_inputs_and_deletes_old_jobs(sql_broker_url: str, db_url: str, folder: Path,
                                                                   prefix: str):
    "A finished job's input is emptied; finished jobs past the retention go (dead ones stay); the answer stays stored."
    from fsml_nb.serve import new_job, stored_replies

    config = WorkerConfig(MODEL, queue_prefix=prefix, name="purging", lease_seconds=0.2, max_attempts=1)
    worker = ServeWorker(db_url, sql_broker_url, ServedModel.load(folder), config, engine=engine_of(db_url))
    broker = SqlBroker(sql_broker_url, lease_seconds=0.2, max_attempts=1)
    try:
        jobs = [new_job(MODEL, "array", np.ones((1, 8, 8)).tolist()) for _ in range(3)]
        broker.publish_many([(config.queue, job) for job in jobs])
        assert worker.step() == 1 and worker.step() == 1  # the first two answered and stored
        [dying] = broker.take(config.queue, "gone")  # the third: leased by a worker that vanishes
        time.sleep(0.3)
        broker.reclaim(config.queue)
        queued = new_job(MODEL, "array", np.ones((1, 8, 8)).tolist())
        broker.publish(config.queue, queued)
        assert set(job_bodies(broker, "fsml_serve_jobs").values()) == {""}  # the bodies are beside the rows
        assert job_bodies(broker) == {jobs[2]["id"]: json.dumps(jobs[2]), queued["id"]: json.dumps(queued)}
        assert [broker.state(job["id"]) for job in jobs] == ["done", "done", "dead"]
        broker.reclaim(config.queue)  # within the retention: nothing deleted
        assert len(broker.replies([job["id"] for job in jobs])) == 3
        broker.retention_seconds = 0
        broker.reclaim(config.queue)
        assert [broker.state(job["id"]) for job in [*jobs, queued]] == [None, None, "dead", "queued"]
        assert job_bodies(broker).keys() == {jobs[2]["id"], queued["id"]}  # the dead job's body is its record
        assert broker.replies([jobs[2]["id"]])[jobs[2]["id"]]["error_kind"] == "dead_letter"
        stored = stored_replies(engine_of(db_url), [job["id"] for job in jobs])
        assert sorted(stored) == sorted(job["id"] for job in jobs[:2])  # the answers outlive the queue's rows
        assert all(reply["label"] == "9" for reply in stored.values())
    finally:
        broker.close()
        worker.broker.close()


def job_bodies(broker: SqlBroker, table: str = "fsml_serve_job_bodies") -> dict[str, str]:
    "The bodies of a SQL broker's jobs by id: those of the bodies table, or (`fsml_serve_jobs`) the rows' own column."
    with broker.engine.connect() as connection:
        return dict(connection.exec_driver_sql(f"SELECT id, body FROM {table}").all())


def test_a_sql_broker_keeps_a_jobs_body_beside_its_row_until_it_is_answered(sql_broker_url: str, prefix: str):
    "Published beside the row (first one kept), read with the lease, deleted with the answer, kept for a lost lease."
    import base64

    broker, queue = SqlBroker(sql_broker_url, lease_seconds=0.2, max_attempts=1), f"{prefix}.{MODEL}"
    try:
        jobs = [new_job(MODEL, "image", base64.b64encode(png(64, 64, value)).decode()) for value in (10, 20, 30, 40)]
        broker.publish_many([(queue, job) for job in jobs])
        broker.publish(queue, {**jobs[0], "input": {"kind": "array", "data": [0]}})  # an id queued twice: kept once
        assert job_bodies(broker) == {job["id"]: json.dumps(job) for job in jobs}
        assert set(job_bodies(broker, "fsml_serve_jobs").values()) == {""}
        first, second = broker.take(queue, "w", limit=2)
        assert [first.job, second.job] == jobs[:2]  # the bodies come with the lease
        broker.reply_many([(first, {"request_id": first.request_id, "label": "0"})], "w")
        assert first.request_id in job_bodies(broker)  # posted, lease going on: the body stays (the job may come back)
        broker.acknowledge([first], "w")
        broker.finish_many("w", [(second, {"request_id": second.request_id, "label": "1"})])
        assert job_bodies(broker).keys() == {jobs[2]["id"], jobs[3]["id"]}
        broker.publish(queue, jobs[0])  # a finished job queued again gets no body back
        assert broker.state(jobs[0]["id"]) == "done" and jobs[0]["id"] not in job_bodies(broker)
        [third] = broker.take(queue, "w")
        broker.acknowledge([third], "not-its-holder")  # a lease that is not (or no longer) this worker's
        assert broker.state(third.request_id) == "running" and third.request_id in job_bodies(broker)
        time.sleep(0.3)
        broker.reclaim(queue)  # its lease ran out: dead (max_attempts=1), with its body
        [fourth] = broker.take(queue, "w")
        broker.acknowledge([fourth], "w")
        assert job_bodies(broker) == {third.request_id: json.dumps(jobs[2])}
        assert broker.replies([third.request_id])[third.request_id]["error_kind"] == "dead_letter"
        with broker.engine.begin() as connection:  # a body left beside a finished job (none should be) goes with it
            connection.exec_driver_sql(f"INSERT INTO fsml_serve_job_bodies (id, body) VALUES ('{jobs[0]['id']}', 'x')")
        broker.retention_seconds = 0
        broker.reclaim(queue)
        assert [broker.state(job["id"]) for job in jobs] == [None, None, "dead", None]
        assert job_bodies(broker) == {third.request_id: json.dumps(jobs[2])}
    finally:
        broker.close()


def test_jobs_queued_by_the_previous_version_survive_the_upgrade(sql_broker_url: str, db_url: str, folder: Path,
                                                                 prefix: str):
    "A queue made by the version that kept bodies in the rows: its queued job is answered, its dead job reported."
    import base64

    from fsml_nb.serve import stored_replies

    config = WorkerConfig(MODEL, queue_prefix=prefix, name="upgraded")
    old = SqlBroker(sql_broker_url)
    queued, dead = (new_job(MODEL, "image", base64.b64encode(png()).decode()) for _ in range(2))
    with old.engine.begin() as connection:  # the previous version's queue: no bodies table, bodies in the rows
        connection.exec_driver_sql("DROP TABLE fsml_serve_job_bodies")
        for job, status in ((queued, "queued"), (dead, "dead")):
            connection.exec_driver_sql(
                "INSERT INTO fsml_serve_jobs (id, queue, body, created_at, status, attempts) VALUES "
                f"('{job['id']}', '{config.queue}', '{json.dumps(job)}', {time.time()}, '{status}', 3)")
    old.close()
    worker = ServeWorker(db_url, sql_broker_url, ServedModel.load(folder), config, engine=engine_of(db_url))
    try:
        deadline = time.monotonic() + 30
        while not worker.step():
            assert time.monotonic() < deadline, "the old job was not taken"
        assert worker.broker.state(queued["id"]) == "done"
        assert stored_replies(engine_of(db_url), [queued["id"]])[queued["id"]]["label"] == "9"
        assert job_bodies(worker.broker, "fsml_serve_jobs")[queued["id"]] == ""  # emptied as before
        assert worker.broker.replies([dead["id"]])[dead["id"]]["error_kind"] == "dead_letter"  # read from the row
        assert job_bodies(worker.broker) == {}
    finally:
        worker.broker.close()


def test_a_dead_sql_job_is_stored_once_as_a_dead_rabbitmq_job_is(sql_broker_url: str, db_url: str, prefix: str):
    "Two API processes' worth of SqlReplies: each dead job gets one served_predictions row, with its error and input."
    from fsml_nb.serve import ServeApi, dead_letter_reply, input_sha256, queue_name

    config = ApiConfig(db_url, sql_broker_url, queue_prefix=prefix, max_attempts=1, lease_seconds=0.2,
                       retention_seconds=7200.0, follow_registry=False)
    apis = [ServeApi(config, engine_of(db_url)) for _ in range(2)]
    vanishing = SqlBroker(sql_broker_url, lease_seconds=0.2, max_attempts=1)
    queue = queue_name(prefix, MODEL)
    jobs = [new_job(MODEL, "array", np.full((1, 8, 8), index).tolist()) for index in range(3)]
    try:
        assert [api.broker.broker.retention_seconds for api in apis] == [7200.0, 7200.0]  # the API purges too
        for index, job in enumerate(jobs):
            apis[index % 2].broker.publish(queue, job)  # no client waits: POST /v1/jobs
        assert len(vanishing.take(queue, "gone", limit=3)) == 3  # a worker that vanishes with all three
        time.sleep(0.3)
        vanishing.reclaim(queue)  # the worker's side marks them dead, as an idle worker would
        deadline = time.monotonic() + 30
        while len(stored_rows(db_url)) < 3:
            assert time.monotonic() < deadline, stored_rows(db_url)
            time.sleep(0.1)
        time.sleep(2.5)  # both APIs look again: nothing more is stored
        assert vanishing.dead_jobs(queue) == []
    finally:
        for api in apis:
            api.close()
        vanishing.close()
    with reading(engine_of(db_url)) as connection:
        rows = connection.execute(select(served_predictions)).mappings().all()
    assert sorted(row["request_id"] for row in rows) == sorted(job["id"] for job in jobs)
    for job in jobs:  # the row RabbitMQ's path stores: the dead-letter error, the input's hash, no label
        row = next(row for row in rows if row["request_id"] == job["id"])
        assert (row["role"], row["model_name"], row["input_sha256"], row["error"], row["label"]) == (
            "served", MODEL, input_sha256(job), dead_letter_reply(job, 1)["error"], None)


def test_fsml_serve_worker_takes_the_retention_of_finished_jobs(db_url: str, folder: Path, prefix: str, tmp_path: Path):
    "`--retention-seconds 0`: the worker process deletes a finished job at its next idle reclaim (the answer stays)."
    broker_url = f"sqlite:///{tmp_path}/queue.db"
    broker = SqlBroker(broker_url)
    worker = start_worker(worker_env(tmp_path, db_url, broker_url), prefix, "purger", "--retention-seconds", "0",
                          folder=folder)
    try:
        wait_live(db_url, {"purger"})
        job = new_job(MODEL, "array", np.ones((1, 8, 8)).tolist())
        broker.publish(f"{prefix}.{MODEL}", job)
        deadline = time.monotonic() + 60
        while broker.state(job["id"]) is not None or not stored_rows(db_url):  # answered, stored, then deleted
            assert time.monotonic() < deadline and worker.poll() is None, (broker.state(job["id"]), worker.poll())
            time.sleep(0.1)
    finally:
        stop(worker)
        broker.close()
    assert [row["request_id"] for row in stored_rows(db_url)] == [job["id"]]
