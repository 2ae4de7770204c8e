"""Two real worker processes never run the same action at once."""
import os
import subprocess
import sys

from tests.core.plugin_fixtures import Actions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_two_worker_processes_never_run_one_action_at_once(make_host, db_url, tmp_path):
    host = make_host(db_url=db_url, available={"actions_fx": Actions()}, plugins=["actions_fx"])
    host.close()
    journal = tmp_path / "journal.txt"
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.core.worker_script", host.config.path,
                               str(journal), "3", "40"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    runs = sorted(tuple(float(x) for x in line.split()[:2]) + (line.split()[2],)
                  for line in journal.read_text().splitlines())
    wins = {}
    for _, _, pid in runs:
        wins[pid] = wins.get(pid, 0) + 1
    assert sorted(wins.values()) == [3, 3], f"each worker should win 3 runs: {wins}"
    for (s1, e1, _), (s2, e2, _) in zip(runs, runs[1:]):
        assert s2 >= e1, f"runs overlap: {s1}-{e1} and {s2}-{e2}"
