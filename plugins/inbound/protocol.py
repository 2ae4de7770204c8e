"""The gateway's SMTP and LMTP sessions: aiosmtpd's, with the guards a server on the open
Internet needs.

- Admission: before the greeting the handler may refuse a connection (421 4.7.0: too many
  connections, too many from one address, a tarpitted peer).
- Every command first asks the handler whether the session may go on (its total length,
  commands without a mail transaction, the tarpit); if not, 421 4.7.0 and the connection
  is closed.
- `XFORWARD` (Postfix's way for an MTA in front of us to name the original client) is
  taken from trusted peers only.
- aiosmtpd's own size refusals are rewritten into enhanced status codes (552 5.3.4).
"""
import re

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from .settings import LINE_TOO_LONG, TOO_BIG

# Commands that are part of a mail transaction; everything else counts as "idle".
TRANSACTION = frozenset({"MAIL", "RCPT", "DATA", "QUIT", "BDAT"})
XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext (`+2B` for '+'), as XFORWARD values are sent."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


class _Guarded:
    def __init__(self, handler, **kwargs):
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
        if self._admitted:
            self._admitted = False
            self.event_handler.release(self)
        super().connection_lost(error)

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

    async def push(self, status):
        text = status.decode() if isinstance(status, bytes) else status
        replaced = {"552 Error": TOO_BIG, "500 Line too long": LINE_TOO_LONG}
        for prefix, line in replaced.items():
            if text.startswith(prefix):
                await self.event_handler.note_refusal(self.session, self.envelope, line)
                status = line
        return await super().push(status)


class GatewaySMTP(_Guarded, SMTP):
    pass


class GatewayLMTP(_Guarded, LMTP):
    pass
