"""The SMTP/LMTP gateway on aiosmtpd.

The event loop only speaks SMTP: every database touch (RCPT checks, routing, logging) runs
on a small thread pool through `loop.run_in_executor`, each thread with its own connection
to the host's database. A DATA reply is sent once the outcome is committed.
"""
import asyncio
import concurrent.futures
import re
import threading

import peewee as pw
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from postroom.core.errors import DatabaseUnavailable

from . import decisions, recipients, routing
from .settings import BARE_LF, LINE_TOO_LONG, LOCAL_PROBLEM, TEMPFAIL, TOO_BIG, TOO_MANY_RCPT, settings

DB_ERRORS = (pw.OperationalError, pw.InterfaceError, DatabaseUnavailable)
_BARE = re.compile(rb"(?<!\r)\n|\r(?!\n)")
IDENT = "Postroom inbound gateway"


class _Replies:
    """Rewrites aiosmtpd's own size refusals into enhanced status codes (552 5.3.4)."""

    async def push(self, status):
        text = status.decode() if isinstance(status, bytes) else status
        replaced = {"552 Error": TOO_BIG, "500 Line too long": LINE_TOO_LONG}
        for prefix, line in replaced.items():
            if text.startswith(prefix):
                await self.event_handler.note_refusal(self.session, self.envelope, line)
                status = line
        return await super().push(status)


class GatewaySMTP(_Replies, SMTP):
    pass


class GatewayLMTP(_Replies, LMTP):
    pass


class GatewayHandler:
    """aiosmtpd handler: recipient checks at RCPT, routing after DATA."""

    def __init__(self, host, lmtp=False, executor=None):
        self.host = host
        self.lmtp = lmtp
        self.settings = settings(host)
        self.executor = executor

    async def _db(self, fn, *args):
        """Run blocking database work on the pool; a database failure closes that thread's
        connection (so the next call reconnects) and is re-raised."""
        def call():
            try:
                return fn(*args)
            except DB_ERRORS:
                try:
                    self.host.db.close()
                except Exception:  # noqa: BLE001 - already broken; reconnect next time
                    pass
                raise
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

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
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return TOO_MANY_RCPT
        try:
            line = await self._db(self._rcpt, self._peer(session), envelope.mail_from or "", address)
        except DB_ERRORS as exc:
            self.host.log.warning("inbound RCPT <%s> deferred: database unavailable: %s", address, exc)
            return TEMPFAIL
        if line.startswith("250"):
            envelope.rcpt_tos.append(address)
        return line

    def _rcpt(self, peer, mail_from, address) -> str:
        verdict = recipients.check(self.host, address)
        if verdict.accepted and verdict.kind in ("alias", "catchall"):
            # Cut a loop early on the envelope sender; the From header is judged after DATA.
            refusal = routing.loop_refusal(self.host, (mail_from or "").lower())
            if refusal:
                verdict.code, verdict.text, verdict.kind = 550, refusal, None
        if not verdict.accepted:
            with self.host.transaction():
                decisions.record(self.host, peer=peer, mail_from=mail_from, sender=mail_from.lower(),
                                 recipients=[address], verdict="refused", route="refused",
                                 code=verdict.code, reason=verdict.text)
        return verdict.line

    def _deliver(self, session, envelope, rcpts, data):
        # Mail the routing triggers (followers notified of a reply) leaves in the background:
        # a slow outgoing server must not hold up our answer to this client.
        with self.host.offloading():
            return routing.deliver(self.host, peer=self._peer(session), mail_from=envelope.mail_from or "",
                                   rcpts=rcpts, data=data, lmtp=self.lmtp)

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        if _BARE.search(data):
            await self.note_refusal(session, envelope, BARE_LF)
            return self._answer([(r, BARE_LF) for r in rcpts])
        try:
            results = await self._db(lambda: self._deliver(session, envelope, rcpts, data))
        except DB_ERRORS as exc:
            self.host.log.warning("inbound DATA from <%s> deferred: database unavailable: %s",
                                  envelope.mail_from, exc)
            return self._answer([(r, TEMPFAIL) for r in rcpts])
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin's hook: defer, never lose the mail
            self.host.log.error("inbound DATA from <%s> deferred: %s: %s", envelope.mail_from,
                                type(exc).__name__, exc, exc_info=exc)
            # Answered here, not by handle_exception, so that LMTP still gets one line per recipient.
            return self._answer([(r, LOCAL_PROBLEM) for r in rcpts])
        return self._answer(results)

    def _answer(self, results) -> str:
        if self.lmtp:  # one reply per recipient, in RCPT order (RFC 2033)
            return "\r\n".join(line for _, line in results)
        return routing.smtp_reply(results)

    async def handle_exception(self, error):
        self.host.log.error("inbound session error: %s: %s", type(error).__name__, error,
                            exc_info=error)
        return LOCAL_PROBLEM


class _Controller(Controller):
    def __init__(self, handler, smtp_class, limits, **kwargs):
        self._smtp_class = smtp_class
        self._limits = limits
        super().__init__(handler, **kwargs)

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
        self.controller = None
        self.settings = s

    def start(self):
        self.executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="inbound-db")
        handler = GatewayHandler(self.host, self.lmtp, self.executor)
        limits = {"data_size_limit": self.settings.max_size, "timeout": self.settings.timeout,
                  "enable_SMTPUTF8": True, "decode_data": False, "ident": IDENT,
                  "hostname": self.host.config.primary_domain}
        self.controller = _Controller(handler, GatewayLMTP if self.lmtp else GatewaySMTP, limits,
                                      hostname=self.bind_host, port=self.port)
        self.controller.start()
        self.host.log.info("%s listening", self.name)

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
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
