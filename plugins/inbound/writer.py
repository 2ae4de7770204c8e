"""Group commit: one thread stores the gateway's messages, many per transaction.

On SQLite every writer takes turns at one write lock, and each commit costs a sync; four
pool threads each committing one message spend their time waiting for each other. The
gateway's pool threads therefore only prepare a message (parse it, check the sender's
authentication: no transaction), and hand the storing to this writer. It takes whatever
messages are waiting (up to `batch_max`), stores them in one transaction, commits, and
only then resolves each message's future, so a 250 still means "committed". A message
whose storing fails gets its own error and the others are stored all the same: the batch
is then rolled back and stored again with a savepoint for each message, so that the
failing one is rolled back alone (a savepoint per message on every batch cost more than
the messages' own statements, and messages rarely fail). A failed commit (or a database
error, after which the transaction cannot be trusted) fails every message of the batch,
which the gateway answers 451.

With `delay` (seconds), a writer that has taken every waiting message and still has room
waits that long for one more before storing (once per batch: a message waits at most that
long more), as PostgreSQL's commit_delay does. Without it the writer starts on the first
message that arrives, stores batches of three or four, and contends with the event loop
for the interpreter lock while the loop is still reading the other sessions' messages;
waiting lets the loop finish them undisturbed. Measured with smtp-source's 8 sessions
(SQLite, 2 cores), half a millisecond cut the gateway's CPU per message by a fifth to a
third, the event loop's as much as the writer's; the rate gained 0-25%, within what that
shared machine's noise allows one to tell.

With `expecting` (a callable: how many messages are on their way, the gateway's sessions
between MAIL FROM and the hand-over), the writer waits only while one is, and for all of
them within that one `delay`: when every session's message is already in the batch (the
usual case under steady load: the clients answered together come back together) nothing
more can come, and waiting the whole delay for it was a pause in every batch.

With `store_many`, a batch whose messages all came with a payload is first stored at once,
set-based (the inbound gateway's `batch.store_batch`); if that fails, each message's `fn`
runs in its own savepoint as above.

With `prepare`, each submission's payload is first passed through `prepare(payload)` on
the writer thread, outside the transaction and the writers' turn: what it returns is
stored; None means it took the submission elsewhere (it submits it again later, or settles
its future itself). The gateway parses messages there: handing each one to a pool thread
and from it to the writer cost more than the parse itself (two thread switches under
the GIL).

`fn` may therefore run twice (the first run rolled back, its after-commit work dropped
with it): it must write only to the database.
"""
import asyncio
import collections
import concurrent.futures
import fcntl
import os
import queue
import threading
import time

import peewee as pw

from postroom.core.db import sqlite_file
from postroom.core.errors import DatabaseUnavailable

DB_ERRORS = (pw.OperationalError, pw.InterfaceError, DatabaseUnavailable)
_STOP = object()


class GroupWriter:
    """`submit(fn)` runs `fn()` on the writer thread inside a savepoint of a shared
    transaction; the returned future completes after that transaction committed."""

    def __init__(self, host, batch_max: int = 64, name: str = "inbound-db-writer", store_many=None,
                 prepare=None, delay: float = 0.0, expecting=None):
        self.host = host
        self.delay = max(0.0, float(delay))  # see the module docstring
        self.expecting = expecting  # see the module docstring
        self.prepare = prepare  # see the module docstring
        # store_many(payloads) -> [result]: the whole batch at once, set-based, when every
        # message of it came with a payload; on any failure each `fn` runs in a savepoint.
        self.store_many = store_many
        self.batch_max = max(1, int(batch_max))
        self._queue = queue.SimpleQueue()
        self._turn = _WriterTurn(host)
        self._checkpoints = _Checkpoints(host) if self._turn.fd is not None else None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        self._queue.put((fn, future, None))
        return future

    def submit_from(self, loop, fn, future: asyncio.Future | None = None, payload=None) -> asyncio.Future:
        """`submit` for a coroutine on `loop`: the batch's outcomes reach the loop in one
        wake-up, not one per message. Called on the loop, or on any thread with `future`
        (made on the loop) to complete. `payload` is what `store_many` takes for it."""
        future = loop.create_future() if future is None else future
        self._queue.put((fn, _OnLoop(loop, future), payload))
        return future

    def queued(self) -> int:
        """How many submissions wait for the writer (approximate while others submit)."""
        return self._queue.qsize()

    def close(self, timeout: float = 30):
        """Store what is queued, then stop the thread and close its connection."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self):
        stopping = False
        while not stopping:
            batch, waited, deadline = [], not self.delay, None
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
                    if waited:
                        break
                    if self.expecting is None:
                        waited, wait = True, self.delay  # once: one more may be a moment away
                    elif self.expecting() <= 0:
                        break  # nobody is on the way
                    else:  # until they are all here, within one delay
                        now = time.monotonic()
                        deadline = deadline or now + self.delay
                        wait = deadline - now
                        if wait <= 0:
                            break
                    try:
                        item = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
            if self.prepare is not None:
                batch = self._prepared(batch)
            if batch:
                with self._turn:
                    if self._checkpoints is not None:
                        self._checkpoints.prepare()
                    self._commit(batch)
                if self._checkpoints is not None:  # outside the turn: other processes' writers need not wait
                    self._checkpoints.committed(idle=self._queue.empty())
        if not self.host.db.is_closed():
            self.host.db.close()
        self._turn.close()

    def _prepared(self, batch) -> list:
        """The batch with each payload through `prepare`; a submission it fails on gets that
        failure, one it takes elsewhere leaves the batch."""
        kept = []
        for fn, future, payload in batch:
            if payload is not None:
                try:
                    payload = self.prepare(payload)
                except Exception as exc:  # noqa: BLE001 - that message's own failure
                    _settle([(future, False, exc)])
                    continue
                if payload is None:
                    continue
            kept.append((fn, future, payload))
        return kept

    def _commit(self, batch):
        try:
            try:
                outcomes = self._store(batch, savepoints=False)
            except _OneFailed as failed:
                if len(batch) == 1 and not failed.together:  # rolled back: its failure was its own
                    outcomes = [(False, failed.__cause__)]
                else:
                    outcomes = self._store(batch, savepoints=True)
        except BaseException as exc:  # noqa: BLE001 - the commit failed: nothing of the batch is stored
            if isinstance(exc, DB_ERRORS):
                try:
                    self.host.db.close()  # reconnect for the next batch
                except Exception:  # noqa: BLE001 - already broken
                    pass
            _settle([(future, False, exc) for _, future, _ in batch])
            if not isinstance(exc, Exception):
                raise
            return
        _settle([(future, ok, value) for (_, future, _), (ok, value) in zip(batch, outcomes)])

    def _store(self, batch, savepoints: bool) -> list:
        """Run the batch in one transaction; [(ok, result or exception)] once committed.
        With `savepoints`, each message in its own; without, the first message to fail
        rolls back the whole batch (`_OneFailed`)."""
        if not savepoints and self.store_many is not None and all(p is not None for _, _, p in batch):
            # Pipelined on PostgreSQL: BEGIN goes out with the batch's first reads, and the
            # statements whose answers are not needed at once with the next ones.
            with self.host.db.pipeline(), self.host.transaction():
                try:
                    return [(True, value) for value in self.store_many([p for _, _, p in batch])]
                except DB_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - whose failure is unknown: each alone
                    raise _OneFailed(together=True) from exc
        outcomes = []
        with self.host.transaction():
            for fn, _, _ in batch:
                try:
                    if savepoints:
                        with self.host.transaction():  # a savepoint: this message alone
                            outcomes.append((True, fn()))
                    else:
                        outcomes.append((True, fn()))
                except DB_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - that message's own failure
                    if not savepoints:
                        raise _OneFailed() from exc
                    outcomes.append((False, exc))
        return outcomes


class _WriterTurn:
    """On SQLite, the writers of K gateway processes sharing one database file take turns
    through a lock file beside it (flock): a writer waiting for SQLite's write lock would
    sleep in SQLite's busy handler (1, 2, 5, 10 ... ms between tries, however soon the
    lock is free), while one waiting on the lock file is woken the moment it is released.
    Other writers (the CLI, RCPT refusals) keep SQLite's busy timeout. Nothing on
    PostgreSQL, whose row locks do not serialise the gateways."""

    def __init__(self, host):
        path = sqlite_file(host.db)
        self.fd = None
        if path:
            try:
                self.fd = os.open(path + "-inbound-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:  # a read-only folder: SQLite's busy timeout alone, as before
                self.fd = None

    def __enter__(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Checkpoints:
    """On SQLite, the writer copies the write-ahead log back into the database file after
    it has answered a batch, not inside the commit that stored it. SQLite's automatic
    checkpoint runs in the COMMIT that takes the log past 1,000 pages: every twenty-odd
    batches one of them waited for a checkpoint (pages copied, two syncs) before its
    clients got their 250. Here the writer's connection checkpoints itself (PASSIVE) once
    `every` batches have committed, when no message is waiting (the clients are then
    still reading their replies and sending the next ones), or after four times as many
    batches whatever waits, so the log stays as small as before. A checkpoint that fails
    is tried again after the next batch; other connections keep SQLite's own (at
    `core.checkpoints.BACKSTOP_PAGES`). The host's checkpoint thread copies pages too,
    beside the writer, so the writer's own checkpoint often finds little left to copy;
    it stays because it is the one that, run between two batches, has the whole log
    copied and lets the next batch start it over."""

    def __init__(self, host, every: int = 16):
        self.host, self.every = host, every
        self.since = 0
        self._connection = None

    def prepare(self):
        """Before a batch: the writer's connection (opened again after an error) leaves
        checkpoints to `committed`."""
        db = self.host.db
        try:
            connection = db.connection()
            if connection is not self._connection:
                db.execute_sql("PRAGMA wal_autocheckpoint = 0")
                self._connection = connection
        except DB_ERRORS:  # the batch meets the same error and says so
            self._connection = None

    def committed(self, idle: bool):
        self.since += 1
        if self.since < self.every or (not idle and self.since < 4 * self.every):
            return
        try:
            self.host.db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # all: no statement left open
            self.since = 0
        except DB_ERRORS:
            pass  # tried again after the next batch


class _OneFailed(Exception):
    """A message of a batch stored without savepoints failed: store the batch again, each
    message in its own savepoint. `together`: the batch was stored set-based, so which
    message failed is unknown (even with one message, its own path may succeed)."""

    def __init__(self, together: bool = False):
        super().__init__()
        self.together = together


class _OnLoop:
    """An asyncio future of `loop`, to be settled from the writer thread."""
    __slots__ = ("loop", "future")

    def __init__(self, loop, future):
        self.loop, self.future = loop, future


def _settle(items):
    """Complete each (future, ok, result or exception); futures of an event loop are
    completed by one callback per loop."""
    by_loop = collections.defaultdict(list)
    for future, ok, value in items:
        if isinstance(future, _OnLoop):
            by_loop[future.loop].append((future.future, ok, value))
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    for loop, waiting in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, waiting)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle_on_loop(waiting):
    for future, ok, value in waiting:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
