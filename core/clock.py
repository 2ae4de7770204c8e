"""Time for the whole host comes from here, so tests move time instead of sleeping."""
import datetime as dt
import threading

UTC = dt.timezone.utc


class SystemClock:
    """The real clock: aware UTC datetimes."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; thread-safe so worker threads share it."""

    def __init__(self, start: dt.datetime | None = None):
        start = start or dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, delta: dt.timedelta | None = None, **kwargs) -> dt.datetime:
        """Move forward by `delta` (or timedelta(**kwargs)); returns the new now."""
        delta = delta if delta is not None else dt.timedelta(**kwargs)
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: dt.datetime) -> None:
        with self._lock:
            self._now = when if when.tzinfo else when.replace(tzinfo=UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """Stored datetimes are naive UTC; give them their zone back."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def naive(value: dt.datetime | None) -> dt.datetime | None:
    """Aware → naive UTC, the form every datetime column stores."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def parse_when(text: str) -> dt.datetime:
    """An ISO 8601 time given on the command line, as an aware UTC datetime (naive means
    UTC; `Z` and offsets are understood); InvalidInput with an example otherwise. The one
    parser for operator times (`--at`, `campaign schedule`)."""
    from .errors import InvalidInput
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"not an ISO date-time: {text!r} (e.g. 2026-12-01T09:00 or "
                           f"2026-12-01T09:00+02:00; UTC unless an offset is given)") from None
    return aware(value).astimezone(UTC)
