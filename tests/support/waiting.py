"""Waiting for something another thread or process does, bounded (never a bare sleep)."""
import time


def wait_for(predicate, timeout: float = 30, step: float = 0.05) -> bool:
    """True as soon as `predicate()` is, False once `timeout` seconds passed without."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    """`wait_for`, raising AssertionError naming `what` when `timeout` seconds pass first."""
    if not wait_for(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
