"The multi-row lease of `fsml_nb.db` on both databases: concurrent callers never share a row, nor take more than asked."
from __future__ import annotations

import threading

from sqlalchemy import Column, Integer, MetaData, Table, Text, select

from fsml_nb.db import LEASED, complete_lease, driver_statement, lease_columns, lease_statement, make_engine, \
    reclaim_expired

metadata = MetaData()
jobs = Table("lease_jobs", metadata, Column("id", Integer, primary_key=True), Column("payload", Text, nullable=False),
             *lease_columns())
LEASE = lease_statement(jobs, returning=[jobs.c.id])


def test_concurrent_batches_never_overlap_and_expired_leases_come_back(db_url: str) -> None:
    engine = make_engine(db_url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(jobs.insert(), [{"payload": f"job {n}"} for n in range(60)])
    lease = driver_statement(LEASE, engine.dialect.name)
    assert driver_statement(LEASE, engine.dialect.name) is lease
    taken: dict[str, list[int]] = {"ana": [], "bob": [], "cy": []}
    start, errors = threading.Barrier(len(taken)), []

    def lease_all(owner: str) -> None:
        try:
            start.wait()
            while True:
                with engine.begin() as connection:
                    rows = connection.exec_driver_sql(lease.sql, lease.parameters(owner=owner, expires=1030.0,
                                                                                   limit=4)).all()
                if not rows:
                    return
                assert len(rows) <= 4, rows  # never more than asked
                taken[owner] += [row[0] for row in rows]
        except Exception as error:  # the test's thread reports to the test
            errors.append(error)
    threads = [threading.Thread(target=lease_all, args=(owner,)) for owner in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    every = [key for keys in taken.values() for key in keys]
    assert sorted(every) == list(range(1, 61))  # each row leased once, by one caller
    with engine.begin() as connection:
        holders = dict(connection.execute(select(jobs.c.id, jobs.c.lease_owner).where(jobs.c.status == LEASED)).all())
        assert all(holders[key] == owner for owner, keys in taken.items() for key in keys)
        owner = next(owner for owner, keys in taken.items() if keys)  # one caller may have taken them all
        finished = taken[owner][0]
        assert complete_lease(connection, jobs, finished, owner)
        assert not complete_lease(connection, jobs, finished, owner)  # done already
        assert reclaim_expired(connection, jobs, now=1031.0) == 59
        retaken = connection.exec_driver_sql(lease.sql, lease.parameters(owner="dee", expires=2000.0, limit=100)).all()
        attempts = set(connection.execute(select(jobs.c.attempts).where(jobs.c.id != finished)).scalars())
    assert sorted(row[0] for row in retaken) == sorted(set(every) - {finished})  # the expired ones, and only those
    assert attempts == {2}
    engine.dispose()
