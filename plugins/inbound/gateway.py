"""The SMTP/LMTP gateway on aiosmtpd.

The event loop speaks SMTP; the database work (RCPT checks, routing, logging) runs on a
small thread pool through `loop.run_in_executor`, each thread with its own connection to
the host's database. On SQLite an RCPT the database accepts by reads alone (an alias,
the catchall, the bounce address, within the loop limits) is answered on the loop itself,
from its own connection, which never waits for a lock (see `_accepted_here`): the pool's
round trip for it, two thread switches under the GIL, cost more than the read; what it read
there answers the same alias and sender for a second more (`rcpt_memo`). On PostgreSQL the
loop never touches the database: it answers such an RCPT only from what the pool read for
an earlier one within that second (`_remembered`). After DATA the one writer
thread (`writer.GroupWriter`) parses the message and checks its sender (a pool thread
does when that asks DNS), then stores it together with the other messages waiting, in
one transaction. A DATA reply is sent once the outcome is committed. The limits on
strangers (connections, session length, idle commands, tarpit) are decided on the loop
from in-memory counters, without touching the database.
"""
import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import gc
import concurrent.futures
import ipaddress
import os
import threading

from aiosmtpd.controller import Controller

from . import batch, decisions, recipients, routing
from .rcpt_memo import RcptMemo
from .protocol import GatewayLMTP, GatewaySMTP
from .refusals import RefusalLog
from .settings import (BARE_LF, LOCAL_PROBLEM, SESSION_TOO_LONG, TARPIT, TEMPFAIL, TOO_MANY_COMMANDS,
                       TOO_MANY_CONNECTIONS, TOO_MANY_FROM_PEER, TOO_MANY_RCPT, settings)
from .writer import DB_ERRORS, GroupWriter

IDENT = "Postroom inbound gateway"
# Set by `postroom serve --role inbound --workers K` for its children (core.serve).
REUSE_PORT_ENV = "POSTROOM_REUSE_PORT"
# Messages stored per transaction at most: enough to amortise a commit over the sessions of
# a busy gateway, few enough that one batch's wait stays short.
BATCH_MAX = 32


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def give_back_memory():
    """Return the memory a large message needed to the system. glibc keeps freed blocks of
    a thread's arena for reuse (and raises its mmap threshold after a large free), so
    without this every large message would leave its size behind in the gateway's RSS."""
    gc.collect()  # a message's objects may sit in reference cycles (parsed MIME trees do)
    if _TRIM is not None:
        _TRIM(0)


class GatewayHandler:
    """aiosmtpd handler: recipient checks at RCPT, routing after DATA."""

    def __init__(self, host, lmtp=False, executor=None, large_executor=None, writer=None):
        self.host = host
        # Stores small messages in shared transactions (group commit); without it each pool
        # thread stores its own message in its own transaction.
        self.writer = writer
        self.lmtp = lmtp
        self.settings = s = settings(host)
        self.executor = executor
        # Large messages are processed one at a time on their own thread: the memory one of
        # them needs is then reused by the next instead of held by every pool thread.
        self.large_executor = large_executor
        self.open_sessions = 0
        # Sessions between an accepted MAIL FROM and the hand-over of their message (or
        # its end otherwise): what the writer may still wait for (see writer.py, `delay`).
        # Counted on the loop thread; the writer only reads it.
        self.on_their_way = 0
        self.per_peer = collections.Counter()
        self.refusals = RefusalLog(s.refusal_burst, s.tarpit_refusals, s.tarpit_minutes)
        self.large_lane = asyncio.Semaphore(1)  # see handle_DATA
        # See `_accepted_here`; with no pool (a handler run on its own) everything is asked inline.
        self.rcpt_on_loop = getattr(host.db, "engine", "") == "sqlite" and executor is not None
        self._loop_connection = None  # the connection whose busy timeout was set to 0
        # The loop's, see rcpt_memo (both engines; with no pool nothing answers on the loop).
        self.rcpt_memo = RcptMemo(host) if executor is not None else None

    # --- limits on strangers, decided on the loop thread --------------------------------

    @staticmethod
    def _ip(session) -> str:
        peer = session.peer
        return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")

    def is_trusted(self, session) -> bool:
        return self.settings.is_trusted(self._ip(session))

    def client_of(self, session) -> str:
        """The address per-client limits count: the peer's, or for a trusted MTA the original
        client it named with XFORWARD ("" when it named none)."""
        ip = self._ip(session)
        if not self.settings.is_trusted(ip):
            return ip
        addr = (getattr(session, "xforward", {}) or {}).get("ADDR", "")
        addr = addr[5:] if addr.upper().startswith("IPV6:") else addr
        try:
            return str(ipaddress.ip_address(addr))
        except ValueError:  # [UNAVAILABLE], [TEMPUNAVAIL] or garbage: nobody to count
            return ""

    def _helo(self, session) -> str:
        forwarded = (getattr(session, "xforward", {}) or {}).get("HELO", "")
        if self.is_trusted(session):
            return forwarded if not forwarded.startswith("[") else ""
        return session.host_name or ""

    def admit(self, server) -> str | None:
        """Count a new connection; the 421 line when it is one too many, else None."""
        ip = self._ip(server.session)
        self.open_sessions += 1
        self.per_peer[ip] += 1
        server.started_at = self.host.clock.now()
        s, trusted = self.settings, self.settings.is_trusted(ip)
        refusal = None
        if self.open_sessions > s.max_connections:
            refusal = TOO_MANY_CONNECTIONS
        elif not trusted and self.per_peer[ip] > s.max_connections_per_peer:
            refusal = TOO_MANY_FROM_PEER
        elif not trusted and self.refusals.tarpitted(ip, server.started_at):
            refusal = TARPIT
        if refusal:
            self._release_ip(ip)
            self.host.log.info("inbound connection from %s refused: %s", ip, refusal)
        return refusal

    def release(self, server):
        self._release_ip(self._ip(server.session))
        if self.executor is not None:  # a good moment to write the aggregates of past minutes
            asyncio.get_running_loop().run_in_executor(self.executor, self.flush_refusals)

    def _release_ip(self, ip):
        self.open_sessions -= 1
        self.per_peer[ip] -= 1
        if self.per_peer[ip] <= 0:
            del self.per_peer[ip]

    def session_refusal(self, server, command) -> str | None:
        """The 421 line that ends `server`'s session before `command`, else None."""
        s, now = self.settings, self.host.clock.now()
        if server.started_at is not None and (now - server.started_at).total_seconds() > s.session_max:
            return SESSION_TOO_LONG
        if server.idle_commands > s.max_idle_commands:
            return TOO_MANY_COMMANDS
        client = self.client_of(server.session)
        if client and self.refusals.tarpitted(client, now):
            if self.is_trusted(server.session):
                return None  # the MTA's other clients are not punished; see handle_MAIL
            return TARPIT
        return None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        session.xforward = {}
        if self.is_trusted(session):
            responses.insert(len(responses) - 1, "250-XFORWARD " + " ".join(
                ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")))
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        client = self.client_of(session)
        if client and self.is_trusted(session) and self.refusals.tarpitted(client, self.host.clock.now()):
            return f"450 4.7.1 Too many refused commands from client {client}; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        if not getattr(session, "on_its_way", False):
            session.on_its_way = True
            self.on_their_way += 1
        return "250 OK"

    async def handle_RSET(self, server, session, envelope):
        session.xforward = {}
        self.transaction_over(session)
        return "250 OK"

    def transaction_over(self, session):
        """`session` will not hand the writer a message before its next MAIL FROM (its
        message was handed over, refused, reset, or the client went away)."""
        if getattr(session, "on_its_way", False):
            session.on_its_way = False
            self.on_their_way -= 1

    def flush_refusals(self, everything=False):
        """Write the aggregated refusals of minutes that are over (on a worker thread)."""
        due = self.refusals.take_due(self.host.clock.now(), everything)
        if not due:
            return
        try:
            with self.host.transaction():
                for client, minute, code, count, reason, mail_from in due:
                    decisions.record(self.host, peer=client, mail_from=mail_from, verdict="refused",
                                     route="refused", code=code, client=client, repeat=count,
                                     created_at=minute,
                                     reason=f"{count} more refusals within this minute, like: {reason}")
        except Exception:  # noqa: BLE001 - the aggregate is best effort; the refusals stood
            self.host.log.warning("inbound: %s aggregated refusal rows not written", len(due))

    async def _db(self, fn, *args, executor=None, retry=False):
        """Run blocking database work on the pool; a database failure closes that thread's
        connection (so the next call reconnects) and is re-raised. With `retry`, the work
        is tried once more on a fresh connection first: a pool thread may hold a connection
        the server dropped while the writer thread met the outage (it then answered 451)."""
        def call():
            for attempt in range(2 if retry else 1):
                try:
                    return fn(*args)
                except DB_ERRORS:
                    try:
                        self.host.db.close()
                    except Exception:  # noqa: BLE001 - already broken; reconnect next time
                        pass
                    if attempt or not retry:
                        raise
        # The result comes back with one call_soon_threadsafe, without the future chaining
        # of run_in_executor (a pool hop at every RCPT: its bookkeeping was most of it).
        loop = asyncio.get_running_loop()
        answered = loop.create_future()

        def run():
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - raised where it is awaited
                loop.call_soon_threadsafe(_fail, answered, exc)
            else:
                loop.call_soon_threadsafe(_succeed, answered, result)
        (executor or self.executor).submit(run)
        return await answered

    def _peer(self, session):
        peer = session.peer
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")

    async def note_refusal(self, session, envelope, line):
        """Log a refusal decided on the loop thread (size, bare LF) on the pool."""
        code, _, reason = line.partition(" ")
        kwargs = {"peer": self._peer(session), "mail_from": envelope.mail_from or "",
                  "recipients": list(envelope.rcpt_tos), "verdict": "refused", "route": "refused",
                  "code": int(code), "reason": reason}
        await asyncio.get_running_loop().run_in_executor(self.executor, self._record_quietly, kwargs)

    def _record_quietly(self, kwargs):
        try:
            with self.host.transaction():
                decisions.record(self.host, **kwargs)
        except Exception:  # noqa: BLE001 - the log row is best effort; the refusal stands
            self.host.log.warning("inbound refusal not written to the decision log: %s", kwargs)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        key = address.strip().lower()
        if any(r.strip().lower() == key for r in envelope.rcpt_tos):
            # Kept in the envelope so that LMTP still answers every RCPT; delivery counts it once.
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 Ok (duplicate recipient: delivered once)"
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return TOO_MANY_RCPT
        mail_from, client = envelope.mail_from or "", self.client_of(session)
        if self.rcpt_memo is not None:
            answer = self._accepted_here if self.rcpt_on_loop else self._remembered
            line = answer(mail_from, address, client)
            if line is not None:
                envelope.rcpt_tos.append(address)
                return line
        try:
            line, alias, counts = await self._db(self._rcpt, self._peer(session), mail_from, address,
                                                 client, self.is_trusted(session), retry=True)
        except DB_ERRORS as exc:
            self.host.log.warning("inbound RCPT <%s> deferred: database unavailable: %s", address, exc)
            return TEMPFAIL
        if self.rcpt_memo is not None:  # what the pool read answers the next RCPTs (rcpt_memo)
            now = self.host.clock.now()
            if alias is not None:
                self.rcpt_memo.found_alias(recipients.split(address)[0], alias, now)
            if counts is not None:
                self.rcpt_memo.found_counts(mail_from.lower(), client, counts, now)
        if line.startswith("250"):
            envelope.rcpt_tos.append(address)
        return line

    def _remembered(self, mail_from, address, client) -> str | None:
        """The 250 line for an address the memo answers without the database (PostgreSQL,
        where the loop never touches it): an alias found lately, or a system address,
        with the envelope sender and the client within their loop limits by the memo;
        else None, and the pool asks (`_rcpt`)."""
        memo, now = self.rcpt_memo, self.host.clock.now()
        local = recipients.split(address)[0]
        # {local: None} when the memo knows no alias for it: `check` then reads nothing and,
        # without plugins, answers None for anything that is neither an alias nor a system address.
        verdict = recipients.check(self.host, address, memo.alias(local, now) or {local: None}, plugins=False)
        if verdict is None or not verdict.accepted:
            return None
        if verdict.kind in ("alias", "catchall") and not memo.within_limits((mail_from or "").lower(), client, now):
            return None
        return verdict.line

    def _accepted_here(self, mail_from, address, client) -> str | None:
        """The 250 line for an address the database accepts by reads alone, asked on the
        loop thread (SQLite only: a local file, no network), else None and the pool asks
        (`_rcpt`): a refusal is written down, a plugin's claim may do anything. The loop's
        connection waits for no lock (busy timeout 0): a database locked for a while (a
        migration, an exclusive lock) is the pool's to wait for, never the loop's."""
        db = self.host.db
        try:
            connection = db.connection()  # the loop thread's own, opened on first use
            if connection is not self._loop_connection:
                db.execute_sql("PRAGMA busy_timeout = 0")
                self._loop_connection = connection
            memo, now = self.rcpt_memo, self.host.clock.now()
            local = recipients.split(address)[0]
            known = memo.alias(local, now)
            verdict = recipients.check(self.host, address, known, plugins=False)
            if verdict is None or not verdict.accepted:
                return None
            if verdict.kind == "alias" and known is None:
                memo.found_alias(local, verdict.alias, now)
            if verdict.kind in ("alias", "catchall") and memo.loop_refusal((mail_from or "").lower(), client, now):
                return None
            return verdict.line
        except DB_ERRORS:
            with contextlib.suppress(Exception):  # reconnect next time; the pool answers this one
                db.close()
            return None

    def close_loop_connection(self):
        """Close the loop thread's own connection (run on the loop: connections are per thread)."""
        if not self.host.db.is_closed():
            self.host.db.close()

    def _rcpt(self, peer, mail_from, address, client, trusted) -> tuple:
        """(the RCPT line, the alias found or None, the loop counts that refused nothing or
        None): the last two for the loop's memo."""
        verdict = recipients.check(self.host, address)
        alias = verdict.alias if verdict.kind == "alias" else None
        counts = None
        if verdict.accepted and verdict.kind in ("alias", "catchall"):
            # Cut a loop early on the envelope sender and the client; From is judged after DATA.
            counts = routing.loop_counts(self.host, (mail_from or "").lower(), client=client)
            refusal = routing.loop_refusal(self.host, (mail_from or "").lower(), client=client, counts=counts)
            if refusal:
                verdict.code, verdict.text, verdict.kind = 550, refusal, None
                counts = None
        if not verdict.accepted:
            key = client or ("" if trusted else peer.rpartition(":")[0])
            now = self.host.clock.now()
            alone = self.refusals.note(key, verdict.code, verdict.text, mail_from, now) if key else True
            if alone:
                with self.host.transaction():
                    decisions.record(self.host, peer=peer, mail_from=mail_from, sender=mail_from.lower(),
                                     recipients=[address], verdict="refused", route="refused",
                                     code=verdict.code, reason=verdict.text, client=client)
            self.flush_refusals()
        return verdict.line, alias, counts

    def _deliver(self, session, envelope, rcpts, data):
        # Mail the routing triggers (followers notified of a reply) leaves in the background:
        # a slow outgoing server must not hold up our answer to this client.
        with self.host.offloading():
            return routing.deliver(self.host, peer=self._peer(session), mail_from=envelope.mail_from or "",
                                   rcpts=rcpts, data=data, lmtp=self.lmtp, client=self.client_of(session),
                                   helo=self._helo(session))

    async def handle_DATA(self, server, session, envelope):
        rcpts = list(envelope.rcpt_tos)
        spool = envelope.spool
        try:
            if envelope.bare_line_ending:
                await self.note_refusal(session, envelope, BARE_LF)
                return self._answer([(r, BARE_LF) for r in rcpts])
            # One large message at a time is read back into memory: eight of them arriving
            # together wait on disk, not in RAM.
            large = spool.tell() > self.settings.spool_threshold
            async with self.large_lane if large else contextlib.nullcontext():
                return await self._data(session, envelope, spool, rcpts, large)
        finally:
            session.xforward = {}  # XFORWARD names the client of one transaction
            self.transaction_over(session)

    def _store(self, received):
        with self.host.offloading():  # see _deliver
            return routing.store(self.host, received, self.lmtp)

    def store_many(self, received: list) -> list:
        """The writer's batch at once (see batch.py); on its failure each `_store` alone."""
        with self.host.offloading():  # see _deliver
            return batch.store_batch(self.host, received, self.lmtp)

    async def _data(self, session, envelope, spool, rcpts, large=False):
        def work():
            # A small message is read into memory; a large one stays in its file.
            if not large:
                spool.seek(0)
                return self._deliver(session, envelope, rcpts, spool.read())
            try:
                return self._deliver(session, envelope, rcpts, spool)
            finally:
                give_back_memory()
        try:
            if large or self.writer is None:
                results = await self._db(work, executor=self.large_executor if large else None)
            else:
                results = await self._prepare_and_store(session, envelope, rcpts, spool)
        except DB_ERRORS as exc:
            self.host.log.warning("inbound DATA from <%s> deferred: database unavailable: %s",
                                  envelope.mail_from, exc)
            return self._answer([(r, TEMPFAIL) for r in rcpts])
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin's hook: defer, never lose the mail
            self.host.log.error("inbound DATA from <%s> deferred: %s: %s", envelope.mail_from,
                                type(exc).__name__, exc, exc_info=exc)
            # Answered here, not by handle_exception, so that LMTP still gets one line per recipient.
            return self._answer([(r, LOCAL_PROBLEM) for r in rcpts])
        if self.rcpt_memo is not None:
            self.rcpt_memo.accepted((envelope.mail_from or "").lower(), self.client_of(session),
                                    sum(line.startswith("250") for _, line in results))
        return self._answer(results)

    def _prepare_and_store(self, session, envelope, rcpts, spool) -> asyncio.Future:
        """The future of a small message's outcome: the writer parses it before storing it
        with its batch (`parse_for_writer`), so the loop wakes once for the answer and no
        other thread in between, unless the sender's authentication needs DNS."""
        loop = asyncio.get_running_loop()
        spool.seek(0)  # read here: the spool is closed when the session goes
        job = _Job(self._peer(session), envelope.mail_from or "", rcpts, spool.read(), self.client_of(session),
                   self._helo(session), loop, loop.create_future())
        self.writer.submit_from(loop, lambda: self._store(job.received), job.answered, payload=job)
        self.transaction_over(session)  # after the hand-over: the writer never misses it
        return job.answered

    def parse_for_writer(self, job):
        """The writer's `prepare`: the Received to store for `job`, parsed on the writer
        thread (CPU only, outside any transaction); None when its sender's authentication
        asks DNS, which a pool thread does before handing it back to the writer (network
        work must not hold up the writer's other messages)."""
        if job.received is None:
            job.received = routing.parsed(self.host, peer=job.peer, mail_from=job.mail_from, rcpts=job.rcpts,
                                          data=job.data, client=job.client)
            job.data = None  # kept as the parsed mail's raw bytes
            if routing.looks_up(self.host, job.received):
                self.executor.submit(self._authenticate, job)
                return None
            routing.authenticate(self.host, job.received, job.helo)
        return job.received

    def _authenticate(self, job):
        """On a pool thread: the DNS work of `job`'s sender authentication, then back to the writer."""
        try:
            routing.authenticate(self.host, job.received, job.helo)
        except BaseException as exc:  # noqa: BLE001 - answered by handle_DATA
            job.loop.call_soon_threadsafe(_fail, job.answered, exc)
            return
        self.writer.submit_from(job.loop, lambda: self._store(job.received), job.answered, payload=job)

    def _answer(self, results) -> str:
        if self.lmtp:  # one reply per recipient, in RCPT order (RFC 2033)
            return "\r\n".join(line for _, line in results)
        return routing.smtp_reply(results)

    async def handle_exception(self, error):
        self.host.log.error("inbound session error: %s: %s", type(error).__name__, error,
                            exc_info=error)
        return LOCAL_PROBLEM


class _Job:
    """A small message on its way through the writer: what the loop read of it, then its parse."""
    __slots__ = ("peer", "mail_from", "rcpts", "data", "client", "helo", "loop", "answered", "received")

    def __init__(self, peer, mail_from, rcpts, data, client, helo, loop, answered):
        self.peer, self.mail_from, self.rcpts, self.data = peer, mail_from, rcpts, data
        self.client, self.helo, self.loop, self.answered = client, helo, loop, answered
        self.received = None


async def _call(fn):
    return fn()


def _fail(future, exc):
    if not future.done():
        future.set_exception(exc)


def _succeed(future, result):
    if not future.done():  # cancelled meanwhile: the client went away
        future.set_result(result)


class _Controller(Controller):
    def __init__(self, handler, smtp_class, limits, reuse_port=False, **kwargs):
        self._smtp_class = smtp_class
        self._limits = limits
        self._reuse_port = reuse_port
        super().__init__(handler, **kwargs)

    def _create_server(self):
        # SO_REUSEPORT: K gateway processes of one `serve --workers K` share the port and
        # the kernel spreads connections over them. Only when the supervisor asks for it, so
        # a second, unrelated gateway on a busy port still fails with "cannot listen".
        return self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                       ssl=self.ssl_context, reuse_port=self._reuse_port or None)

    def factory(self):
        return self._smtp_class(self.handler, **self._limits)


class GatewayService:
    """The gateway as a `postroom serve` service: `start()` returns once it listens."""

    def __init__(self, host, bind_host=None, port=None, lmtp=None):
        s = settings(host)
        self.host = host
        self.bind_host = bind_host or s.host
        self.port = int(port if port is not None else s.port)
        self.lmtp = s.lmtp if lmtp is None else lmtp
        self.name = f"inbound {'LMTP' if self.lmtp else 'SMTP'} gateway on {self.bind_host}:{self.port}"
        self.workers = s.workers
        self.executor = None
        self.large_executor = None
        self.writer = None
        self.controller = None
        self.settings = s

    def start(self):
        self.executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="inbound-db")
        self.large_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inbound-large")
        handler = GatewayHandler(self.host, self.lmtp, self.executor, self.large_executor)
        handler.writer = self.writer = GroupWriter(self.host, batch_max=BATCH_MAX, store_many=handler.store_many,
                                                   prepare=handler.parse_for_writer,
                                                   delay=self.settings.commit_delay,
                                                   expecting=lambda: handler.on_their_way)
        limits = {"data_size_limit": self.settings.max_size, "timeout": self.settings.timeout,
                  "enable_SMTPUTF8": True, "decode_data": False, "ident": IDENT,
                  "hostname": self.host.config.primary_domain}
        self.controller = _Controller(handler, GatewayLMTP if self.lmtp else GatewaySMTP, limits,
                                      reuse_port=os.environ.get(REUSE_PORT_ENV) == "1",
                                      hostname=self.bind_host, port=self.port)
        self.controller.start()
        self.host.log.info("%s listening", self.name)

    def stop(self):
        if self.controller is not None:
            handler = self.controller.handler
            if self.controller.loop.is_running():
                with contextlib.suppress(Exception):  # best effort at shutdown
                    asyncio.run_coroutine_threadsafe(_call(handler.close_loop_connection),
                                                     self.controller.loop).result(timeout=10)
            self.controller.stop()
            self.controller = None
            if self.executor is not None:
                self.executor.submit(handler.flush_refusals, True).result(timeout=30)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.large_executor is not None:
            self.large_executor.submit(lambda: self.host.db.is_closed() or self.host.db.close()).result(timeout=10)
            self.large_executor.shutdown(wait=True)
            self.large_executor = None
        if self.executor is not None:
            self._close_thread_connections()
            self.executor.shutdown(wait=True)
            self.executor = None

    def _close_thread_connections(self):
        """Each pool thread holds its own database connection: close every one of them
        (the barrier makes each thread take exactly one of the close tasks)."""
        barrier = threading.Barrier(self.workers, timeout=5)

        def close():
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            if not self.host.db.is_closed():
                self.host.db.close()
        for future in [self.executor.submit(close) for _ in range(self.workers)]:
            try:
                future.result(timeout=10)
            except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
