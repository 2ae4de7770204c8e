"""A scheduler worker in its own process, for the lease tests.

python -m tests.core.worker_script CONFIG JOURNAL WINS TIMEOUT: keep asking for an earlier run
of `FX: Slow` and run whatever is due, until this process has won WINS runs of it (or
TIMEOUT seconds passed); each run appends "start end pid" to JOURNAL.
"""
import os
import sys
import time

from postroom.core import scheduler
from postroom.core.config import Config
from postroom.core.host import Host
from tests.core.plugin_fixtures import Actions


def own_wins(journal):
    try:
        with open(journal) as fh:
            return sum(1 for line in fh if line.split()[2] == str(os.getpid()))
    except FileNotFoundError:
        return 0


def main(config_path, journal, wins, timeout):
    actions = Actions()
    actions.sleep, actions.journal = 0.15, journal
    host = Host(Config.load(config_path), available={"actions_fx": actions}).open()
    deadline = time.time() + float(timeout)
    while time.time() < deadline and own_wins(journal) < int(wins):
        with host.transaction():
            scheduler.trigger(host, "fx.slow")
        claimed = scheduler.claim_next_due(host, scheduler.worker_name())
        ran = claimed is not None
        if ran:
            scheduler.run_claimed(host, claimed)
        # After a win, step back a little so the other worker gets its chance at the lease.
        time.sleep(0.2 if ran else 0.01)
    host.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
