"""Shared fixtures: stores on SQLite and PostgreSQL, and the rule for tests that need a server.

A test that needs PostgreSQL (or, later, RabbitMQ or Chromium) skips with the reason when
the server does not answer, unless FSML_REQUIRE_SERVICES=1, which CI sets: then the
missing server is a failure, so CI can never pass by skipping.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from fsml_nb.db import normalize_db_url
from fsml_nb.store import Store
from fsml_nb.testing import scratch_postgres_database

@pytest.fixture(autouse=True)
def no_kernel_keeper(monkeypatch) -> None:
    "No test starts a pipeline kernel keeper (a process that outlives the run) unless it sets FSML_KERNEL_KEEPER=on."
    monkeypatch.setenv("FSML_KERNEL_KEEPER", "off")


PG_URL = os.environ.get("FSML_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    return os.environ.get("FSML_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    "Skip the test, or fail it when FSML_REQUIRE_SERVICES=1."
    if services_required():
        pytest.fail(f"{reason} (FSML_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    "The admin URL of a reachable PostgreSQL server, or skip/fail."
    url = normalize_db_url(PG_URL)
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any failure to connect means: no server for these tests
        skip_or_fail(f"PostgreSQL is not reachable at {PG_URL}: {str(error).splitlines()[0]}")
    yield url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    "A fresh, empty PostgreSQL database for one test, dropped afterwards."
    with scratch_postgres_database(postgres_server_url, prefix="fsml_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    "The URL of an empty database on each backend."
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fsml.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    "An empty store on each backend, with a local blob folder."
    with Store(db_url, str(tmp_path / "blobs")) as opened:
        yield opened


RABBIT_URL = os.environ.get("FSML_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    "The URL of a reachable RabbitMQ, or skip/fail."
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBIT_URL)).close()
    except Exception as error:  # any failure to connect means: no server for these tests
        skip_or_fail(f"RabbitMQ is not reachable at {RABBIT_URL}: {type(error).__name__} {error}")
    return RABBIT_URL


# --- servers and a real browser -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    "Run a server process until its port answers; stop it (and its children) afterwards."
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None:
                pytest.fail(f"{command[0]} exited: {server.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{command[0]} did not listen on port {port} within 90 s")
            time.sleep(0.3)
        yield server
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def launch_chromium(playwright, path: str):
    "Debian's Chromium, headless, with no network of its own (see DEVELOPERS.md)."
    return playwright.chromium.launch(executable_path=path, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync"])


@pytest.fixture
def chromium_path() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        skip_or_fail("Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("playwright (the Python package) is not installed")
    return path


def wait_for(condition, timeout: float = 60.0, what: str = "the page") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def kernel_processes(server_pid: int) -> list[int]:
    "The ids of the kernel processes a server started (its children running ipykernel)."
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        parent = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if parent == server_pid and b"ipykernel" in command:
            found.append(int(entry.name))
    return found


def child_processes(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []
