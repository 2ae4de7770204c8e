"""Eight `postroom` processes doing first-time setup at once (init, then enabling a plugin
that brings the migrations of two plugins), on a fresh database of each engine: every one
exits 0, and everything exists exactly once. (An upgrade is the same path: migrations
pending when processes start.)"""
import os
import shutil
import subprocess
import sys

import pytest

from postroom.core.models import Parameter, Partner, PluginState

pytestmark = pytest.mark.heavy

POSTROOM = shutil.which("postroom", path=os.path.dirname(sys.executable)) or "postroom"
RACERS = 8


def race(config, *args) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([POSTROOM, "--config", str(config), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(RACERS)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_eight_processes_racing_init_and_plugins_enable_all_succeed_once(db_url, tmp_path, make_host):
    config = tmp_path / "race.cfg"
    config.write_text(f"[postroom]\ndatabase = {db_url}\nlog_dir = {tmp_path / 'logs'}\ndomains = example.com\n")
    # mail_marketing requires mail_queue: the second race migrates two plugins at once.
    for args in (["init"], ["plugins", "enable", "mail_marketing"]):
        results = race(config, *args)
        failures = [(r.returncode, r.stderr.decode().strip()) for r in results if r.returncode != 0]
        assert failures == [], f"{' '.join(args)}: {failures}"
    host = make_host(db_url=db_url)  # opens the raced database; enables nothing itself
    assert Partner.select().where(Partner.name == "Administrator").count() == 1
    assert Parameter.select().where(Parameter.key.contains("admin")).count() == 1
    enabled = {s.name for s in PluginState.select().where(PluginState.enabled)}
    assert {"mail_queue", "mail_marketing"} <= enabled
    for component in ("core", "mail_queue", "mail_marketing"):
        names = [r[0] for r in host.db.execute_sql(f"SELECT name FROM migrations_{component}").fetchall()]
        assert names and len(names) == len(set(names)), (component, names)
