"""SQLite's write-ahead log copied back into the database file by a thread of its own.

In WAL mode SQLite checkpoints inside the COMMIT that takes the log past its limit: that
commit copies the log's pages into the database file and syncs both before it returns. A
campaign's batch of 1,000 mails (about 500 pages) paid for one every other batch, a
third of Process queue's time, and the queue manager paid for them between two mails.

Here a thread of the host's process, on a connection of its own, checkpoints (PASSIVE:
it never waits for, nor blocks, a reader or a writer) whenever the log file changed since
its last look, every `interval` seconds. SQLite leaves Python's interpreter lock while it
copies and syncs, so that work runs beside the process's writers, on another core when
there is one. The host's own connections keep an automatic checkpoint, at
`BACKSTOP_PAGES` rather than SQLite's 1,000: it rarely has anything left to copy (the
thread has done it), and it is what restarts the log from its beginning once every page
in it is copied (a log that writers keep appending to is never all copied when the thread
looks), so the log file stays under about 16 MB; and should the thread stop, checkpoints
happen as before, only less often."""
import logging
import os
import sqlite3
import threading
import time

# wal_autocheckpoint of the host's connections (pages of 4 KiB): the log's bound.
BACKSTOP_PAGES = 4000
REPORT_EVERY = 60.0  # seconds between two log lines about the same failing checkpoint

log = logging.getLogger("postroom")


class BackgroundCheckpoints:
    """The checkpointing thread of one SQLite database file. `start()` begins it, `stop()`
    ends it (joined, its connection closed); `wake()` makes it look now rather than at its
    next tick. `checkpoints` counts the checkpoints it ran that had pages to copy,
    `failures` those that failed (each tried again at the next tick)."""

    def __init__(self, path: str, interval: float = 0.1):
        self.path, self.interval = path, interval
        self.checkpoints = 0
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None
        self._seen = None  # (mtime, size) of the log file when the last checkpoint began
        self._reported = {}  # failure -> when it was last logged (time.monotonic)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "BackgroundCheckpoints":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _report(self, exc) -> None:
        """A checkpoint that failed (the disk full, an I/O error) in the log, once a minute
        per cause: the commits still succeed into the log, which grows meanwhile, so this
        line is where an operator first reads of it."""
        now, cause = time.monotonic(), str(exc)
        if self._reported.get(cause, -REPORT_EVERY) > now - REPORT_EVERY:
            return
        self._reported[cause] = now
        log.warning("the write-ahead log of %s could not be copied back into it: %s "
                    "(the log grows until it can)", self.path, cause)

    def _log_state(self):
        try:
            st = os.stat(self.path + "-wal")
        except OSError:  # no log (yet, or the last connection removed it)
            return None
        return st.st_mtime_ns, st.st_size

    def _run(self) -> None:
        conn = None
        try:
            while not self._stop.is_set():
                self._wake.wait(self.interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                state = self._log_state()
                if state is None or state == self._seen:
                    continue  # nothing written since the last checkpoint
                if not os.path.exists(self.path):
                    break  # the database is gone (a test's folder removed): nothing to keep
                try:
                    if conn is None:
                        # autocommit: between checkpoints this connection holds no snapshot,
                        # so it never keeps the log from being restarted.
                        conn = sqlite3.connect(self.path, timeout=1, isolation_level=None,
                                               check_same_thread=False)
                    busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    self.failures += 1
                    self._report(exc)
                    if conn is not None:
                        conn.close()
                        conn = None
                    continue  # looked at again at the next tick
                if busy:
                    continue  # another connection was checkpointing: look again at the next tick
                if frames > 0:
                    self.checkpoints += 1
                # The state from before the checkpoint: what was written while it ran
                # changed the file again, so the next tick copies that too.
                self._seen = state
        finally:
            if conn is not None:
                conn.close()
