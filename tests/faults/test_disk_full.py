"""Disk full under a SQLite database, on a real (tiny tmpfs) filesystem, with a real
`postroom serve`: the worker backs off for real, records the root cause ("database or disk
is full"), and resumes promptly once there is room again."""
import datetime as dt
import time

import pytest

from tests.scale.harness import Deployment, enqueue, wait_until
from tests.support import smallfs
from tests.support.smtp import smtp_sink  # noqa: F401 - the fixture

pytestmark = [pytest.mark.heavy,
              pytest.mark.skipif(smallfs.missing() is not None, reason=str(smallfs.missing()))]

FULL_SECONDS = 6


def test_a_full_disk_is_backed_off_named_and_left_promptly_when_room_is_made(make_host, tmp_path, smtp_sink):
    sink = smtp_sink()
    with smallfs.small_fs(tmp_path / "fs", "3m") as folder:
        dep = Deployment(make_host, tmp_path, f"sqlite:///{folder / 'postroom.db'}", ["mail_queue"],
                         {"smtp_host": "127.0.0.1", "smtp_port": sink.port, "serve_poll_seconds": "0.5"})
        try:
            dep.serve()
            wait_until(lambda: "finished" in dep.log(), 60, what="the worker's first (empty) queue run")
            enqueue(dep.host, 20)
            # Due in a few seconds: by then the disk is full under the running worker.
            dep.host.service("mail").trigger_queue(dep.host.clock.now() + dt.timedelta(seconds=3))
            dep.fresh()
            # The log file emptied first: a log already copied back is reused from its
            # start, and the worker's few writes would fit in it with the disk full
            # (its checkpoint thread reports the failed copy); here every write needs room.
            dep.host.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            filler = smallfs.fill(folder)
            wait_until(lambda: "scheduler loop error" in dep.log(), 60, what="the worker to meet the full disk")
            time.sleep(FULL_SECONDS)
            errors = dep.log().count("scheduler loop error")
            filler.unlink()
            freed = time.monotonic()
            wait_until(lambda: len(sink.received()) == 20, 60, 0.1, what="the mails after the disk was freed")
            resumed = time.monotonic() - freed
            log = dep.log()
        finally:
            dep.stop()
            dep.fresh()
    assert errors >= 1
    # Backed off for real: a handful of tries in FULL_SECONDS, not one every 0.05 s.
    assert errors <= 8, f"{errors} loop errors in {FULL_SECONDS}s"
    assert "database or disk is full" in log
    assert "cannot rollback" not in log
    tracebacks = log.count("Traceback")
    assert tracebacks <= 2, f"{tracebacks} tracebacks for one outage"
    assert resumed < 20, f"resumed {resumed:.1f}s after room was made"  # the back-off, not the 1 h interval
