"""A sent mail's journal append sent ahead, on PostgreSQL: the INSERT of `journal.append` goes
out on a connection of its own right after the server's answer, and its commit is confirmed
just before the next mail's data. The commit waits for the WAL flush (about half a
millisecond a mail on the disk measured), and that wait then overlaps composing the next
mail and its MAIL/RCPT/DATA round trip instead of coming before them. Measured on a shared
2-core machine (bench/queue_throughput.py -n 3000, a fresh database each run): 1042-1255
mails/s against 949-1231 for the synchronous append; the drain still waits 70-200 us a
mail for the confirmation, since that window (about 0.2 ms) is shorter than the flush.

The connection is a second one (`core.db.side_connection`), used only here and only from
`start` to `confirm`, so no other statement can come between them; libpq's asynchronous
calls (psycopg.pq) send the statement without waiting for its result. The ledger
(`ledger.Ledger.ahead`) decides when an append may go ahead; SQLite keeps the synchronous
append, which takes 18-24 us, less than a second connection would save."""
import select
import time

from postroom.core.clock import naive
from postroom.core.db import is_postgres, side_connection

_NAME = b"postroom_journal_append"
APPLICATION_NAME = "postroom mail journal"  # the connection's name in pg_stat_activity
# journal._SENT_AND_MARK with libpq's numbered parameters ($2, the claim, and $4, the time,
# twice); the column types come from the table.
_SQL = (b'INSERT INTO "mail_queue_progress" ("mail_id", "token", "outcome", "server", "at") '
        b"VALUES ($1, $2, 'sent', $3, $4), ($5, $2, 'sending', NULL, $4)")


class Unconfirmed(Exception):
    """The append sent ahead may not have committed (an error, a lost connection, no answer
    in time): the caller writes the outcome again, the synchronous way."""


class Ahead:
    """One sending thread's second connection, opened at its first append and kept for the
    run (a connection costs about 2 ms: four appends' overlap)."""

    def __init__(self, db):
        self.db = db
        self.conn = None
        self.off = False  # no psycopg 3: every append goes the synchronous way

    def start(self, token: str, now, sent_id: int, server: str, marked_id: int) -> bool:
        """Send the append of `sent_id` (sent through `server`) and `marked_id` (in flight),
        without waiting; False when it could not go (no connection: append synchronously)."""
        if self.off:
            return False
        try:
            if self.conn is None:
                self.conn = side_connection(self.db, APPLICATION_NAME)
                if self.conn is None:
                    self.off = True
                    return False
                prepared = self.conn.pgconn.prepare(_NAME, _SQL)
                if prepared.error_message:
                    raise OSError(prepared.error_message.decode(errors="replace"))
            self.conn.pgconn.send_query_prepared(_NAME, [
                str(sent_id).encode(), token.encode(), server.encode(),
                naive(now).isoformat().encode(), str(marked_id).encode()])
        except Exception:  # noqa: BLE001 - psycopg's errors or none: the synchronous path writes it
            self.close()
            return False
        return True

    def confirm(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) for the append `start` sent to commit; raises
        Unconfirmed otherwise, with the connection closed (the next start opens another)."""
        pgconn = self.conn.pgconn
        deadline = time.monotonic() + timeout
        error = None
        try:
            pgconn.consume_input()
            if pgconn.is_busy():
                readable = select.poll()  # poll, not select: a busy worker's fds may pass 1024
                readable.register(pgconn.socket, select.POLLIN)
            while pgconn.is_busy():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unconfirmed(f"no answer within {timeout:g} s")
                readable.poll(left * 1000)
                pgconn.consume_input()
            while (result := pgconn.get_result()) is not None:
                if result.error_message:
                    error = result.error_message.decode(errors="replace").strip()
        except Unconfirmed:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - psycopg's OperationalError, a closed socket
            self.close()
            raise Unconfirmed(f"{type(exc).__name__}: {exc}") from exc
        if error:
            self.close()
            raise Unconfirmed(error)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection already gone
                pass


def for_database(db):
    """An Ahead for `db` when it is PostgreSQL, else None (the synchronous append)."""
    return Ahead(db) if is_postgres(db) else None
