"""A queue worker in its own process, for the kill -9 test: `python crash_worker.py CONFIG`."""
import sys

from postroom.core.host import Host
from postroom.plugins.mail_queue import sending

if __name__ == "__main__":
    host = Host.from_config(sys.argv[1])
    print("started", flush=True)
    sending.process_queue(host)
