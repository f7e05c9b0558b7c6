"""Benchmark: one-row lease (`lease_one_statement`) as before (a scalar subquery) and now (a MATERIALIZED CTE).

    python bench/lease_one.py [--rows 2000] [--repeat 5]

Both statements are built once and run through SQLAlchemy (as annotation runs them), each lease in its own
transaction, on SQLite and on a scratch PostgreSQL database; the two shapes take turns, and the table gives the
median CPU time per lease (time.process_time) and the ratio to the old shape, with the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from sqlalchemy import Column, Integer, MetaData, Table, Text, bindparam, select

from fsml_nb.db import LEASED, QUEUED, _key_column, lease_columns, lease_one_statement, make_engine
from fsml_nb.testing import scratch_postgres_database


def old_lease_one(table: Table):
    "The one-row lease as main had it: UPDATE ... WHERE key = (SELECT key ... LIMIT 1 FOR UPDATE SKIP LOCKED)."
    key = _key_column(table)
    first = (select(key).where(table.c.status == QUEUED).order_by(key).limit(1)
             .with_for_update(skip_locked=True).scalar_subquery())
    return (table.update().where(key == first, table.c.status == QUEUED)
            .values(status=LEASED, lease_owner=bindparam("owner"), lease_expires=bindparam("expires"),
                    attempts=table.c.attempts + 1).returning(*table.c))


def run(url: str, rows: int, repeat: int) -> dict[str, list[float]]:
    metadata = MetaData()
    table = Table("bench_lease_one", metadata, Column("id", Integer, primary_key=True), Column("payload", Text),
                  *lease_columns())
    engine = make_engine(url)
    metadata.create_all(engine)
    shapes, times = {"old": old_lease_one(table), "new": lease_one_statement(table)}, {"old": [], "new": []}
    for _ in range(repeat):
        for name, statement in shapes.items():  # turns: the load falls on both alike
            with engine.begin() as connection:
                connection.execute(table.delete())
                connection.execute(table.insert(), [{"payload": f"job {n}", "status": QUEUED} for n in range(rows)])
            started = time.process_time()
            for _ in range(rows):
                with engine.begin() as connection:
                    assert connection.execute(statement, {"owner": "w", "expires": 1.0}).first() is not None
            times[name].append((time.process_time() - started) / rows * 1e6)
    engine.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", default=os.environ.get("FSML_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    options = parser.parse_args()
    print(f"load average before {os.getloadavg()}")
    results = {"sqlite": run(f"sqlite:///{tempfile.mkdtemp(prefix='fsml-lease-one-')}/bench.db", options.rows,
                             options.repeat)}
    with scratch_postgres_database(options.pg, prefix="fsml_bench") as url:
        results["postgresql"] = run(url, options.rows, options.repeat)
    print(f"load average after {os.getloadavg()}")
    print(f"{'database':<12}{'shape':<6}{'CPU µs/lease':>14}{'ratio':>7}")
    for kind, times in results.items():
        base = statistics.median(times["old"])
        for name in ("old", "new"):
            median = statistics.median(times[name])
            print(f"{kind:<12}{name:<6}{median:>14.1f}{median / base:>7.2f}")


if __name__ == "__main__":
    main()
