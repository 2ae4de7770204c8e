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
