"""`postroom.log`, rotated every day at 05:00 UTC, by the host's clock.

The current day's file is `postroom.log`, the previous one `postroom.log.1`, older ones
`postroom.log.YYYY-MM-DD.gz` (the date the file's day started), so `grep` and `zgrep` find
things. Several processes may log into one folder: rotation happens under an exclusive
`flock`, and the day a file belongs to is kept in a small stamp file so that only the first
process past 05:00 rotates and the others simply reopen.
"""
import datetime as dt
import fcntl
import gzip
import logging
import os
import shutil
import sys

from .errors import ConfigError

ROTATE_HOUR = 5
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def period_start(now: dt.datetime) -> dt.datetime:
    """The 05:00 UTC that opened the log day containing `now`."""
    now = now.astimezone(dt.timezone.utc)
    start = now.replace(hour=ROTATE_HOUR, minute=0, second=0, microsecond=0)
    return start if now >= start else start - dt.timedelta(days=1)


class DailyRotatingHandler(logging.Handler):
    """A file handler that rotates at 05:00 UTC as seen by `clock`."""

    def __init__(self, directory: str, clock, name: str = "postroom.log"):
        os.makedirs(directory, exist_ok=True)  # first: a handler that failed half-way breaks logging's exit
        super().__init__()
        self.directory = directory
        self.clock = clock
        self.path = os.path.join(directory, name)
        self.stamp_path = os.path.join(directory, f".{name}.day")
        self.lock_path = os.path.join(directory, f".{name}.lock")
        self.stream = None
        self.day = None
        self.failing = False
        # The log day the stream is open for, as (start, end) timestamps: a line within it
        # needs no rotation check (working out the day cost a fifth of a line).
        self._span = (0.0, 0.0)

    def _read_stamp(self):
        try:
            with open(self.stamp_path) as fh:
                return dt.date.fromisoformat(fh.read().strip())
        except (OSError, ValueError):
            return None

    def _ensure_day(self, day: dt.date):
        if self.day == day and self.stream is not None:
            return
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stamp = self._read_stamp()
            if stamp is not None and stamp < day and os.path.exists(self.path):
                self._rotate(stamp)
            if stamp is None or stamp < day:
                with open(self.stamp_path, "w") as fh:
                    fh.write(day.isoformat())
            if self.stream is not None:
                self.stream.close()
            self.stream = open(self.path, "a", encoding="utf-8")
            self.day = day

    def _rotate(self, finished_day: dt.date):
        previous = self.path + ".1"
        if os.path.exists(previous):
            older_day = finished_day - dt.timedelta(days=1)
            try:
                with open(self.stamp_path + ".1") as fh:
                    older_day = dt.date.fromisoformat(fh.read().strip())
            except (OSError, ValueError):
                pass
            target = f"{self.path}.{older_day.isoformat()}.gz"
            # Compress into a temporary file renamed when complete: a process killed here
            # leaves the .part (overwritten next time) and postroom.log.1, never a truncated
            # .gz. A .gz that exists is complete; its gzip members are carried over whole.
            part = target + ".part"
            with open(part, "wb") as raw:
                if os.path.exists(target):
                    with open(target, "rb") as done:
                        shutil.copyfileobj(done, raw)
                with open(previous, "rb") as src, gzip.GzipFile(fileobj=raw, mode="wb") as dst:
                    shutil.copyfileobj(src, dst)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(part, target)
            os.remove(previous)
        os.replace(self.path, previous)
        with open(self.stamp_path + ".1", "w") as fh:
            fh.write(finished_day.isoformat())

    def emit(self, record):
        try:
            now = self.clock.now()
            stamp = now.timestamp()
            if self.stream is None or not self._span[0] <= stamp < self._span[1]:
                start = period_start(now)
                self._ensure_day(start.date())
                self._span = (start.timestamp(), (start + dt.timedelta(days=1)).timestamp())
            record.clock_now = now  # the formatter's timestamp: the same instant, read once
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception as exc:  # noqa: BLE001 - logging must never break the caller
            self._unwritable(exc)
        else:
            if self.failing:
                self.failing = False
                sys.stderr.write(f"postroom: writing {self.path} works again\n")

    def _unwritable(self, exc):
        """Say once on stderr that the log cannot be written (disk full, permissions), not
        a traceback per line; the stream is reopened on the next line."""
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:
                pass
            self.stream = None
        if not self.failing:
            self.failing = True
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            sys.stderr.write(f"postroom: cannot write the log {self.path}: {reason}; "
                             f"log lines are lost until it can be written again\n")

    def close(self):
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        super().close()


class ClockFormatter(logging.Formatter):
    """Timestamps from the host clock (UTC), so a moved test clock shows in the log."""

    def __init__(self, clock):
        super().__init__(FORMAT)
        self.clock = clock
        self._second = (None, "")  # (whole second, its text): one tuple, so threads never pair them wrongly

    def formatTime(self, record, datefmt=None):
        now = getattr(record, "clock_now", None) or self.clock.now()
        second, text = self._second
        whole = now.replace(microsecond=0)
        if whole != second:  # strftime once per second, not per line
            text = whole.strftime("%Y-%m-%d %H:%M:%S")
            self._second = (whole, text)
        return f"{text},{now.microsecond // 1000:03d}Z"


def install(host, config) -> logging.Handler:
    """Attach a rotating handler for this host to the `postroom` logger."""
    directory = config.path_of("log_dir")
    try:
        handler = DailyRotatingHandler(directory, host.clock)
    except OSError as exc:
        raise ConfigError(f"cannot write logs to log_dir {directory}: {exc.strerror or exc} (fix `log_dir`"
                          f"{' in ' + config.path if config.path else ''})") from None
    handler.setFormatter(ClockFormatter(host.clock))
    logger = logging.getLogger("postroom")
    logger.setLevel(getattr(logging, (config.get("log_level") or "INFO").upper(), logging.INFO))
    logger.addHandler(handler)
    return handler


def uninstall(host, handler) -> None:
    logging.getLogger("postroom").removeHandler(handler)
    handler.close()
