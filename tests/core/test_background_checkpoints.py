"""SQLite's write-ahead log is copied back by the host's own thread, not inside a commit
(core.checkpoints), and the log stays bounded."""
import os

import pytest

from postroom.core.checkpoints import BACKSTOP_PAGES, BackgroundCheckpoints
from tests.support import smallfs
from tests.support.waiting import wait_for


def _fill(host, pages: int, table: str = "filler") -> None:
    """Commit about `pages` pages of new rows, 100 rows (400 KB) per transaction."""
    host.db.execute_sql(f'CREATE TABLE IF NOT EXISTS "{table}" (x BLOB)')
    left = pages
    while left > 0:
        n = min(100, left)
        with host.transaction():
            host.db.execute_sql(f'INSERT INTO "{table}" (x) SELECT randomblob(4000) FROM '
                                f'(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) '
                                'SELECT i FROM c)')
        left -= n


def _log(host):
    """(frames in the log, frames already copied into the database file), copying nothing
    new: a PASSIVE checkpoint from a connection that did not write them reports them."""
    return _passive(host)[1:]


def _passive(host):
    return tuple(host.db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0])


def test_a_commit_past_sqlites_1000_pages_does_not_checkpoint(make_host):
    host = make_host()
    host.checkpoints.stop()  # only the commits themselves now
    assert host.db.execute_sql("PRAGMA wal_autocheckpoint").fetchall()[0][0] == BACKSTOP_PAGES
    path = host.db.database
    database_file = os.path.getsize(path)
    _fill(host, 1500)
    # Every page written is still in the log: no commit copied any back (SQLite's own
    # default would have checkpointed in the commit that passed 1,000 pages).
    assert os.path.getsize(path + "-wal") > 1500 * 4096
    assert os.path.getsize(path) == database_file


def test_the_hosts_thread_copies_the_log_back_after_the_commits(make_host):
    host = make_host()
    assert host.checkpoints.running
    before = host.checkpoints.checkpoints
    _fill(host, 1500)
    host.checkpoints.wake()
    assert wait_for(lambda: host.checkpoints.checkpoints > before and os.path.getsize(host.db.database) > 1500 * 4096)
    # What the thread left to copy once it has seen the last commit: nothing.
    assert wait_for(lambda: host.checkpoints._seen == host.checkpoints._log_state())
    busy, frames, copied = _passive(host)
    assert busy == 0 and frames == copied, (frames, copied)


def test_the_log_restarts_and_stays_bounded_under_steady_writes(make_host):
    host = make_host()
    _fill(host, 3 * BACKSTOP_PAGES)
    # SQLite's default would cap it near 1,000 pages; here the backstop does (a commit
    # past it finds the pages copied by the thread, and the log starts over), give or take
    # the commits whose checkpoint met the thread's. Never restarted, it would hold 12,000.
    assert os.path.getsize(host.db.database + "-wal") < 2 * BACKSTOP_PAGES * (4096 + 24)


def test_closing_the_host_ends_its_checkpoint_thread(make_host):
    host = make_host()
    checkpoints = host.checkpoints
    assert checkpoints.running
    host.close()
    assert not checkpoints.running and host.checkpoints is None


def test_the_thread_ends_when_its_database_is_gone(tmp_path):
    import sqlite3
    path = str(tmp_path / "gone.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    checkpoints = BackgroundCheckpoints(path, interval=0.01).start()
    try:
        os.unlink(path)
        conn.execute("INSERT INTO t VALUES (2)")  # the log changes: the thread looks
        conn.commit()
        assert wait_for(lambda: not checkpoints.running)
    finally:
        checkpoints.stop()
        conn.close()


def test_on_postgresql_there_is_no_checkpoint_thread(make_host, pg_database):
    host = make_host(db_url=pg_database)
    assert host.checkpoints is None


@pytest.mark.skipif(smallfs.missing() is not None, reason=str(smallfs.missing()))
def test_a_checkpoint_the_full_disk_refuses_is_reported_once_with_its_cause(tmp_path):
    import logging
    import sqlite3
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("postroom").addHandler(handler)
    with smallfs.small_fs(tmp_path / "fs", "3m") as folder:
        path = str(folder / "full.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE t (x BLOB)")
        conn.execute("INSERT INTO t SELECT randomblob(4000) FROM (WITH RECURSIVE c(i) AS "
                     "(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200) SELECT i FROM c)")
        smallfs.fill(folder)  # the database file cannot grow to take the log's 200 pages
        checkpoints = BackgroundCheckpoints(path, interval=0.01).start()
        try:
            assert wait_for(lambda: checkpoints.failures >= 10, timeout=10)  # each tick tries again
        finally:
            checkpoints.stop()
            logging.getLogger("postroom").removeHandler(handler)
            conn.close()
    assert len(lines) == 1, lines
    assert "database or disk is full" in lines[0] and path in lines[0]
