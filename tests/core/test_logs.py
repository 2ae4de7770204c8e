"""postroom.log rotates at 05:00 UTC: .1 for yesterday, dated .gz files before that."""
import datetime as dt
import gzip
import logging

from postroom.core.clock import UTC, FrozenClock
from postroom.core.logs import ClockFormatter, DailyRotatingHandler, period_start


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
