"""The Postroom host: config, database, plugins, records & chatter, scheduler, logs."""
import logging

# Without a handler of its own, a failure before the host installs its log file would
# reach logging's last-resort handler and print a traceback on the operator's terminal.
logging.getLogger("postroom").addHandler(logging.NullHandler())
