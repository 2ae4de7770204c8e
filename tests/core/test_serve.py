"""`postroom serve` runs due actions and stops cleanly on SIGTERM."""
import os
import signal
import subprocess
import sys
import threading
import time

from postroom.core import scheduler
from postroom.core.serve import serve
from tests.core.plugin_fixtures import Actions
from tests.support.waiting import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_runs_due_actions_and_triggers_until_stopped(make_host, clock):
    actions = Actions()
    host = make_host(available={"actions_fx": actions}, plugins=["actions_fx"],
                     config={"serve_poll_seconds": "0.05"})
    stop = threading.Event()
    worker = threading.Thread(target=serve, args=(host, stop, False))
    worker.start()
    try:
        deadline = time.time() + 10
        while len(actions.runs) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert {name for name, _ in actions.runs} == {"batch", "flaky"}
        with host.transaction():
            scheduler.trigger(host, "fx.batch")
        while len([r for r in actions.runs if r[0] == "batch"]) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert len([r for r in actions.runs if r[0] == "batch"]) == 2
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()


def test_serve_process_exits_cleanly_on_sigterm(tmp_path):
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text("[postroom]\ndatabase = sqlite:///p.db\nlog_dir = logs\nserve_poll_seconds = 0.1\n")
    env = dict(os.environ, POSTROOM_CONFIG=str(cfg), PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-m", "postroom.cli", "init"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / "logs" / "postroom.log"
    deadline = time.time() + 20
    while time.time() < deadline and not (log.exists() and "serve started" in log.read_text()):
        time.sleep(0.05)
    assert "serve started" in log.read_text()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert "serve stopped" in log.read_text()


def test_serve_with_workers_restarts_a_killed_worker_and_stops_them_all(tmp_path):
    import re
    cfg = tmp_path / "postroom.cfg"
    cfg.write_text("[postroom]\ndatabase = sqlite:///p.db\nlog_dir = logs\nserve_poll_seconds = 0.1\n")
    env = dict(os.environ, POSTROOM_CONFIG=str(cfg), PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-m", "postroom.cli", "init"], env=env, cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "serve", "--workers", "2"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / "logs" / "postroom.log"

    def started():
        return re.findall(r"worker (\d+) started \(pid (\d+)", log.read_text()) if log.exists() else []
    try:
        assert wait_for(lambda: len(started()) == 2 and log.read_text().count("serve started") == 2)
        victim = int(started()[1][1])
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: len(started()) == 3 and log.read_text().count("serve started") == 3), log.read_text()
        assert f"(pid {victim}) exited with -9; restarting" in log.read_text()
        pids = [int(pid) for _, pid in started()]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=40)
    assert proc.returncode == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert log.read_text().count("serve stopped") >= 2
