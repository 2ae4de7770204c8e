"""On a terminal, `list import` shows a progress bar; piped, it prints only its summary."""
import os
import pty
import subprocess
import sys

from .conftest import write_csv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _postroom(tmp_path, *args, tty: bool) -> str:
    cmd = [sys.executable, "-c", "from postroom.cli import main; main()", "--config", str(tmp_path / "postroom.cfg"), *args]
    env = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="100")
    if not tty:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)
    return b"".join(chunks).decode(errors="replace")


def test_import_shows_a_progress_bar_on_a_terminal_only(mk, run, tmp_path):
    host = mk()
    run(host, "list", "create", "news")
    path = write_csv(tmp_path, "contacts.csv", [f"u{i}@example.org,U{i}" for i in range(3000)] + ["bad,row"])
    shown = _postroom(tmp_path, "list", "import", "news", path, tty=True)
    assert "importing contacts.csv" in shown and "100%" in shown and "#" in shown
    assert "skipped line 3002: not a valid email address" in shown
    assert "imported 3000" in shown
    piped = _postroom(tmp_path, "list", "import", "news", path, tty=False)
    assert "importing" not in piped and "%" not in piped
    assert "merged 3000 duplicates" in piped
