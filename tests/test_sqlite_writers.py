"""SQLite writers queue for their turn across processes, and a killed process never blocks the queue.

The queue itself (first come first served, turns handed on at rollback, reads never waiting,
writes nested in one thread) is tested in nbs/01_db.ipynb; these tests need other processes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fsml_nb.db import make_engine

HOLD = """
import sys, time
from fsml_nb.db import make_engine
engine = make_engine(sys.argv[1])
print("waiting", flush=True)
with engine.begin() as connection:
    connection.exec_driver_sql("INSERT INTO turns VALUES (?)", (sys.argv[2],))
    print("holding", flush=True)
    time.sleep(600)
"""


def holder(url: str, name: str) -> subprocess.Popen:
    "A process that begins a write transaction and never ends it (until it is killed)."
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", HOLD, url, name], stdout=subprocess.PIPE, text=True, env=env)


def wait_line(process: subprocess.Popen, line: str) -> None:
    while (got := process.stdout.readline().strip()) != line:
        assert got, f"the holder process ended before saying {line!r}"


def background_write(url: str) -> tuple[threading.Thread, list[float]]:
    "A write in a thread of this process; the list gets the moment it committed."
    done: list[float] = []
    engine = make_engine(url)

    def write() -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO turns VALUES ('this process')")
        done.append(time.monotonic())
        engine.dispose()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, done


def new_database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/writers.db"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE turns (writer TEXT)")
    engine.dispose()
    return url


def test_a_killed_writer_hands_its_turn_on(tmp_path: Path):
    "kill -9 of the process holding the turn (inside its transaction) lets the next writer in at once."
    url = new_database(tmp_path)
    first = holder(url, "first")
    try:
        wait_line(first, "holding")
        thread, done = background_write(url)
        time.sleep(0.5)
        assert not done, "a second writer got in while the first held its transaction"
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        thread.join(5)
        assert done, "the writer behind a killed one did not get in within 5 s"
        assert done[0] - killed < 2, f"the writer behind a killed one waited {done[0] - killed:.2f} s"
    finally:
        first.kill()
        first.wait()


def test_a_killed_waiter_does_not_block_the_writers_behind_it(tmp_path: Path):
    "A process killed while it waits in the queue: the writer behind it still gets in when the holder is done."
    url = new_database(tmp_path)
    first = holder(url, "first")
    second = None
    try:
        wait_line(first, "holding")
        second = holder(url, "second")
        wait_line(second, "waiting")
        time.sleep(0.5)  # second now waits in the queue behind first
        thread, done = background_write(url)
        time.sleep(0.3)
        second.send_signal(signal.SIGKILL)
        second.wait()
        time.sleep(0.3)
        assert not done, "a writer got in beside the one holding the database"
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        thread.join(5)
        assert done, "the writer behind a killed waiter did not get in within 5 s"
        assert done[0] - killed < 2, f"the writer behind a killed waiter waited {done[0] - killed:.2f} s"
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait()
