"""Group commit: one thread stores the gateway's messages, many per transaction.

On SQLite every writer takes turns at one write lock, and each commit costs a sync; four
pool threads each committing one message spend their time waiting for each other. The
gateway's pool threads therefore only prepare a message (parse it, check the sender's
authentication: no transaction), and hand the storing to this writer. It takes whatever
messages are waiting (up to `batch_max`), stores each in its own savepoint of one
transaction, commits, and only then resolves each message's future, so a 250 still
means "committed". A message whose storing fails is rolled back alone (its savepoint) and
gets its own error; a failed commit (or a database error, after which the transaction
cannot be trusted) fails every message of the batch, which the gateway answers 451.
"""
import concurrent.futures
import queue
import threading

import peewee as pw

from postroom.core.errors import DatabaseUnavailable

DB_ERRORS = (pw.OperationalError, pw.InterfaceError, DatabaseUnavailable)
_STOP = object()


class GroupWriter:
    """`submit(fn)` runs `fn()` on the writer thread inside a savepoint of a shared
    transaction; the returned future completes after that transaction committed."""

    def __init__(self, host, batch_max: int = 64, name: str = "inbound-db-writer"):
        self.host = host
        self.batch_max = max(1, int(batch_max))
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    def close(self, timeout: float = 30):
        """Store what is queued, then stop the thread and close its connection."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self):
        stopping = False
        while not stopping:
            batch = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self.batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)
        if not self.host.db.is_closed():
            self.host.db.close()

    def _commit(self, batch):
        outcomes = []
        try:
            with self.host.transaction():
                for fn, _ in batch:
                    try:
                        with self.host.transaction():  # a savepoint: this message alone
                            outcomes.append((True, fn()))
                    except DB_ERRORS:
                        raise
                    except Exception as exc:  # noqa: BLE001 - that message's own failure
                        outcomes.append((False, exc))
        except BaseException as exc:  # noqa: BLE001 - the commit failed: nothing of the batch is stored
            if isinstance(exc, DB_ERRORS):
                try:
                    self.host.db.close()  # reconnect for the next batch
                except Exception:  # noqa: BLE001 - already broken
                    pass
            for _, future in batch:
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), (ok, value) in zip(batch, outcomes):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
