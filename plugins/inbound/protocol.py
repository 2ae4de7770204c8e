"""The gateway's SMTP and LMTP sessions: aiosmtpd's, with the guards a server on the open
Internet needs.

- Admission: before the greeting the handler may refuse a connection (421 4.7.0: too many
  connections, too many from one address, a tarpitted peer).
- Every command first asks the handler whether the session may go on (its total length,
  commands without a mail transaction, the tarpit); if not, 421 4.7.0 and the connection
  is closed.
- `XFORWARD` (Postfix's way for an MTA in front of us to name the original client) is
  taken from trusted peers only.
- Message data is read into a spool that moves to a temporary file past
  `inbound_spool_threshold`, with the size and line-length limits enforced while reading
  (what is over a limit is never kept), and bare CR/LF noted on the way (SMTP smuggling).
- aiosmtpd's own size refusals are rewritten into enhanced status codes (552 5.3.4).
"""
import asyncio
import re
import tempfile

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from .settings import LINE_TOO_LONG, TOO_BIG

# Commands that are part of a mail transaction; everything else counts as "idle".
TRANSACTION = frozenset({"MAIL", "RCPT", "DATA", "QUIT", "BDAT"})
XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
# (argument, local part limit) -> aiosmtpd's (address, rest); an argument is at most a
# command line (512 bytes), so this stays within a few megabytes.
_ADDRESSES: dict = {}
_ADDRESSES_MAX = 4096
SPOOL_CHUNK = 64 * 1024  # bytes of message lines held before they are written to the spool


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext (`+2B` for '+'), as XFORWARD values are sent."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


class _Guarded:
    def __init__(self, handler, **kwargs):
        self._idle_due, self._idle_armed = 0.0, False  # see _reset_timeout
        super().__init__(handler, **kwargs)
        self._smtp_methods = {name: self._guard(name, method) for name, method in self._smtp_methods.items()}
        self._admitted = False
        self.idle_commands = 0
        self.started_at = None

    def _guard(self, name, method):
        async def guarded(arg):
            if name not in TRANSACTION:
                self.idle_commands += 1
            line = self.event_handler.session_refusal(self, name)
            if line:
                await self.push(line)
                if self.transport is not None:
                    self.transport.close()
                return
            await method(arg)
            if name == "DATA":
                self.idle_commands = 0
        return guarded

    async def _handle_client(self):
        line = self.event_handler.admit(self)
        if line:
            await self.push(line)
            self.transport.close()
            return
        self._admitted = True
        await super()._handle_client()

    def connection_lost(self, error):
        if self.session is not None:
            self.event_handler.transaction_over(self.session)
        if self._admitted:
            self._admitted = False
            self.event_handler.release(self)
        super().connection_lost(error)

    def _reset_timeout(self, duration=None):
        """aiosmtpd's idle timeout, moved on at every command without a new timer each
        time (a timer cancelled and a new one scheduled per command: 6% of the event loop's
        profiled time): the one timer, when it fires, waits again for whatever is left.
        `_timeout_handle` stays set, as aiosmtpd's connection_lost expects."""
        due = self.loop.time() + (duration or self._timeout_duration)
        self._idle_due = due
        if not self._idle_armed or self._timeout_handle.when() > due:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._timeout_handle = self.loop.call_at(due, self._idle_over)
            self._idle_armed = True

    def _idle_over(self):
        if self.loop.time() < self._idle_due:  # a command came since it was set
            self._timeout_handle = self.loop.call_at(self._idle_due, self._idle_over)
            return
        self._idle_armed = False
        self._timeout_cb()

    def _getaddr(self, arg):
        """aiosmtpd's parse of a MAIL FROM / RCPT TO argument, remembered per argument: the
        email package's address parser was a third of the event loop's time, and the same
        senders and recipients come back all day (an MTA in front relays them over and
        over). The answer depends on the argument and the local part limit only."""
        key = (arg, self.local_part_limit)
        found = _ADDRESSES.get(key)
        if found is None:
            found = super()._getaddr(arg)
            if len(_ADDRESSES) >= _ADDRESSES_MAX:  # many different ones: start again
                _ADDRESSES.clear()
            _ADDRESSES[key] = found
        return found

    async def smtp_XFORWARD(self, arg):
        """Postfix XFORWARD: `XFORWARD ADDR=192.0.2.7 NAME=mx.client.test ...`."""
        if not self.event_handler.is_trusted(self.session):
            await self.push("550 5.7.0 XFORWARD not permitted from your address")
            return
        attrs = {}
        for item in (arg or "").split():
            name, eq, value = item.partition("=")
            if not eq or name.upper() not in XFORWARD_ATTRS:
                await self.push(f"501 5.5.4 Bad XFORWARD attribute {name[:32]!r}")
                return
            attrs[name.upper()] = xtext_decode(value)[:255]
        self.session.xforward = {**getattr(self.session, "xforward", {}), **attrs}
        await self.push("250 2.0.0 Ok")

    async def smtp_DATA(self, arg):
        """aiosmtpd's DATA, reading into a spool instead of a list of lines in memory."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = tempfile.SpooledTemporaryFile(max_size=self.event_handler.settings.spool_threshold,
                                              prefix="postroom-inbound-")
        try:
            state = await self._read_data(spool)
            if state == "too long":
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            elif state == "too big":
                await self.push("552 Error: Too much mail data")
            if state in ("too long", "too big"):
                self.event_handler.transaction_over(self.session)
                self._set_post_data_state()
                return
            self.envelope.spool = spool
            self.envelope.bare_line_ending = state == "bare"
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push(status)
        finally:
            spool.close()

    async def _read_data(self, spool) -> str:
        """Read up to the lone dot; returns ok | bare | too long | too big. Lines reach the
        spool SPOOL_CHUNK bytes at a time: a spool write per line (its rollover check, in
        Python, twice per line) cost the event loop a few percent of its time."""
        limit, size, state, continued = self.data_size_limit, 0, "ok", False
        pending, pending_size, readuntil = [], 0, self._reader.readuntil
        while self.transport is not None:
            try:
                line = await readuntil(b"\r\n")
            except asyncio.CancelledError:
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                # Longer than a line may be: drain it; the rest of it arrives as `continued`.
                size += len(await self._reader.read(exc.consumed))
                state = "too long" if state != "too big" else state
                continued = True
                continue
            if continued:
                continued = False
                size += len(line)
                continue
            if line == b".\r\n":
                break
            size += len(line)
            if limit and size > limit:
                state = "too big"
            if state in ("too long", "too big"):
                continue  # keep reading to the end, keep nothing
            n = len(line)
            if n > self.line_length_limit:
                state = "too long"
                continue
            if line.find(b"\n") != n - 1 or line.find(b"\r") != n - 2:  # a CR or LF before the CRLF
                state = "bare"
            pending.append(line[1:] if line.startswith(b".") else line)
            pending_size += n
            if pending_size >= SPOOL_CHUNK:
                spool.write(b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            spool.write(b"".join(pending))
        return state

    async def push(self, status):
        text = status.decode() if isinstance(status, bytes) else status
        if text.startswith(("552 Error", "500 Line too long")):  # every reply passes here: one test first
            for prefix, line in _REPLACED.items():
                if text.startswith(prefix):
                    await self.event_handler.note_refusal(self.session, self.envelope, line)
                    status = line
        return await super().push(status)


_REPLACED = {"552 Error": TOO_BIG, "500 Line too long": LINE_TOO_LONG}


class GatewaySMTP(_Guarded, SMTP):
    pass


class GatewayLMTP(_Guarded, LMTP):
    pass
