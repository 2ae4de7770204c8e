"""A really small filesystem (tmpfs of a few MB, mounted as root) to fill up: disk full as
an operator meets it, not simulated. Unmounted afterwards."""
import contextlib
import os
import pathlib
import subprocess


def missing() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    return None


@contextlib.contextmanager
def small_fs(where: pathlib.Path, size: str = "2m"):
    """Mount a tmpfs of `size` at `where` (created); yields the path; unmounts it."""
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        import pytest
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: pathlib.Path, name: str = "filler") -> pathlib.Path:
    """Fill the filesystem of `folder` up to the last byte with one file; returns it."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (65536, 512, 1):
            try:
                while os.write(fd, b"\0" * chunk) > 0:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return path
