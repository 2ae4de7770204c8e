"""Run the marketing process queue in a process the crash test kills with SIGKILL.

Usage: python crash_worker.py CONFIG. Each batch pauses inside its transaction (after its
traces and mails were written, before the commit) and says so on stdout, so the test can
kill it at the worst moment."""
import sys
import time

from postroom.core import scheduler
from postroom.core.host import Host


class SlowBatches:
    """Not a PluginInfo plugin: registered as an always-on hook object."""

    def __init__(self):
        self.batches = 0

    from postroom.core.plugins import hookimpl

    @hookimpl(optionalhook=True)
    def postroom_campaign_batch(self, host, campaign, mails):
        self.batches += 1
        print(f"in batch {self.batches} of campaign {campaign.id} ({len(mails)} mails)", flush=True)
        time.sleep(0.15)


def main(config):
    host = Host.from_config(config, extra=[SlowBatches()])
    while True:
        result = scheduler.run_by_hand(host, "Mail Marketing: Process queue")
        print(f"run done {result['done']} remaining {result['remaining']}", flush=True)
        if not result["remaining"]:
            break


if __name__ == "__main__":
    main(sys.argv[1])
