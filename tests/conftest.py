"""Shared fixtures: stores on SQLite and PostgreSQL, and the rule for tests that need a server.

A test that needs PostgreSQL (or, later, RabbitMQ or Chromium) skips with the reason when
the server does not answer, unless FSML_REQUIRE_SERVICES=1, which CI sets: then the
missing server is a failure, so CI can never pass by skipping.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from fsml_nb.db import normalize_db_url
from fsml_nb.store import Store
from fsml_nb.testing import scratch_postgres_database

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
