"""postroom.log rotates at 05:00 UTC: .1 for yesterday, dated .gz files before that."""
import datetime as dt
import gzip
import logging
import pathlib

import pytest

from postroom.core.clock import UTC, FrozenClock
from postroom.core.logs import ClockFormatter, DailyRotatingHandler, period_start
from tests.support import smallfs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _logger(tmp_path, clock):
    handler = DailyRotatingHandler(str(tmp_path), clock)
    handler.setFormatter(ClockFormatter(clock))
    logger = logging.getLogger(f"test.rotation.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def test_the_log_day_starts_at_five_utc():
    assert period_start(dt.datetime(2026, 3, 2, 4, 59, tzinfo=UTC)).date() == dt.date(2026, 3, 1)
    assert period_start(dt.datetime(2026, 3, 2, 5, 0, tzinfo=UTC)).date() == dt.date(2026, 3, 2)


def test_rotation_names_current_previous_and_dated_compressed_files(tmp_path):
    clock = FrozenClock(dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    log, handler = _logger(tmp_path, clock)
    log.info("day one")                                   # log day 2026-03-01
    clock.set(dt.datetime(2026, 3, 2, 4, 59, tzinfo=UTC))
    log.info("still day one")
    clock.set(dt.datetime(2026, 3, 2, 5, 0, tzinfo=UTC))
    log.info("day two")                                   # rotates
    assert "day two" in (tmp_path / "postroom.log").read_text()
    assert "still day one" in (tmp_path / "postroom.log.1").read_text()
    clock.set(dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC))
    log.info("day three")
    clock.set(dt.datetime(2026, 3, 5, 7, 0, tzinfo=UTC))  # a quiet day in between
    log.info("day five")
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == ["postroom.log", "postroom.log.1", "postroom.log.2026-03-01.gz",
                     "postroom.log.2026-03-02.gz"]
    assert "day five" in (tmp_path / "postroom.log").read_text()
    assert "day three" in (tmp_path / "postroom.log.1").read_text()
    with gzip.open(tmp_path / "postroom.log.2026-03-01.gz", "rt") as fh:
        assert "day one" in fh.read()
    with gzip.open(tmp_path / "postroom.log.2026-03-02.gz", "rt") as fh:
        assert "day two" in fh.read()


def test_two_handlers_on_one_folder_rotate_once(tmp_path):
    clock = FrozenClock(dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    a, ha = _logger(tmp_path, clock)
    b, hb = _logger(tmp_path, clock)
    a.info("a1")
    b.info("b1")
    clock.advance(days=1)
    a.info("a2")
    b.info("b2")
    ha.close()
    hb.close()
    assert sorted((tmp_path / "postroom.log.1").read_text().split("\n")[:-1]) and \
        {"a1", "b1"} <= {line.rsplit(" ", 1)[-1] for line in (tmp_path / "postroom.log.1").read_text().splitlines()}
    assert {"a2", "b2"} == {line.rsplit(" ", 1)[-1] for line in (tmp_path / "postroom.log").read_text().splitlines()}


def test_log_lines_carry_the_host_clock_time(tmp_path):
    clock = FrozenClock(dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    log, handler = _logger(tmp_path, clock)
    log.info("hello")
    handler.close()
    assert (tmp_path / "postroom.log").read_text().startswith("2026-03-01 10:00:00,000Z")


def test_each_line_shows_its_own_millisecond_and_second_as_the_clock_moves(tmp_path):
    """The formatter writes a second's text once and reuses it: lines in one second, the
    next second, and a clock moved back each still show their own time."""
    clock = FrozenClock(dt.datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC))
    log, handler = _logger(tmp_path, clock)
    log.info("a")
    clock.advance(milliseconds=500)
    log.info("b")
    clock.advance(milliseconds=1250)
    log.info("c")
    clock.set(dt.datetime(2026, 3, 1, 9, 59, 59, 7_000, tzinfo=UTC))
    log.info("d")
    handler.close()
    stamps = [line[:24] for line in (tmp_path / "postroom.log").read_text().splitlines()]
    assert stamps == ["2026-03-01 10:00:00,250Z", "2026-03-01 10:00:00,750Z", "2026-03-01 10:00:02,000Z",
                      "2026-03-01 09:59:59,007Z"]


_ROTATE = """
import datetime as dt, logging, sys
from postroom.core.clock import UTC, FrozenClock
from postroom.core.logs import ClockFormatter, DailyRotatingHandler
clock = FrozenClock(dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC))
handler = DailyRotatingHandler(sys.argv[1], clock)
handler.setFormatter(ClockFormatter(clock))
log = logging.getLogger("rotation")
log.propagate = False
log.addHandler(handler)
log.error("day three")
"""


@pytest.mark.heavy
def test_a_kill_9_during_rotation_never_leaves_a_truncated_gzip(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    # Yesterday's file is big enough (40 MB of hex) that compressing it takes a while.
    previous = os.urandom(20_000_000).hex().encode() + b"\n"
    (tmp_path / "postroom.log.1").write_bytes(previous)
    (tmp_path / ".postroom.log.1.day").write_text("2026-03-01")
    (tmp_path / "postroom.log").write_text("day two\n")
    (tmp_path / ".postroom.log.day").write_text("2026-03-02")
    target = tmp_path / "postroom.log.2026-03-01.gz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _ROTATE, str(tmp_path)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        written = [p for p in tmp_path.glob("postroom.log.2026-03-01.gz*") if p.stat().st_size > 0]
        if written:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # in the middle of compressing
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the rotation ended before the kill: nothing was proven"
    if target.exists():  # whatever is there is a whole gzip
        gzip.decompress(target.read_bytes())
    subprocess.run([sys.executable, "-c", _ROTATE, str(tmp_path)], env=env, check=True, timeout=120)
    assert gzip.decompress(target.read_bytes()) == previous  # zcat reads the whole day, once
    assert (tmp_path / "postroom.log.1").read_text() == "day two\n"
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.skipif(smallfs.missing() is not None, reason=str(smallfs.missing()))
def test_a_full_disk_under_the_log_is_said_once_on_stderr_not_a_traceback_per_line(tmp_path, capfd):
    with smallfs.small_fs(tmp_path / "fs", "1m") as folder:
        clock = FrozenClock(dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
        log, handler = _logger(folder, clock)
        log.info("fine")
        filler = smallfs.fill(folder)
        for i in range(200):
            log.info("lost line %d %s", i, "x" * 200)
        filler.unlink()  # the operator makes room
        log.info("back")
        handler.close()
        err = capfd.readouterr().err
        assert err.count("cannot write the log") == 1, err[:2000]
        assert "No space left on device" in err and "Traceback" not in err
        assert "works again" in err
        assert (folder / "postroom.log").read_text().endswith("back\n")
