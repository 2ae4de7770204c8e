"""A scheduler worker in its own process, for the lease tests.

python -m tests.core.worker_script CONFIG JOURNAL SECONDS: for SECONDS, keep asking for an
earlier run of `FX: Slow` and run whatever is due; each run of the slow action appends
"start end pid" to JOURNAL.
"""
import sys
import time

from core import scheduler
from core.config import Config
from core.host import Host
from tests.core.plugin_fixtures import Actions


def main(config_path, journal, seconds):
    actions = Actions()
    actions.sleep, actions.journal = 0.15, journal
    host = Host(Config.load(config_path), available={"actions_fx": actions}).open()
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        with host.transaction():
            scheduler.trigger(host, "fx.slow")
        scheduler.run_due(host)
        time.sleep(0.02)  # let the other worker at the write lock
    host.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
