"""The SMTP client of mail_queue: smtplib for the session (connect, EHLO, STARTTLS, AUTH)
and a hand-written mail transaction that pipelines MAIL, RCPT and DATA (RFC 2920).

Every wait has a deadline for the whole phase, not per read: a server that trickles its
greeting one byte a second is cut off when `connect_timeout` is spent, however regularly
the bytes come. Reads wake up twice a second to ask `stop()` (SIGTERM): a reply on its way
gets two more seconds, then the worker leaves the conversation."""
import ipaddress
import os
import smtplib
import time

from .servers import Server

_SLICE = 0.5  # seconds between two looks at stop() while waiting for a reply
_GRACE = 2.0  # after stop(), a reply on its way still gets this long (no needless doubt)
_MAXLINE = 8192


def dot_stuffed(data: bytes) -> bytes:
    """`data` with a dot added before each line's leading dot (RFC 5321 4.5.2): one
    bytes.replace, not the regex `(?m)^\\.`, which cost about 4 ns a byte (9 us a campaign
    mail, 11 a personalised one, its message being longer)."""
    data = data.replace(b"\n.", b"\n..")
    return b"." + data if data.startswith(b".") else data


class PlaintextAuthRefused(smtplib.SMTPAuthenticationError):
    """We refuse to send a password over an unencrypted connection (not the server's doing).
    An SMTPAuthenticationError, so the mail fails at once (retrying cannot help)."""

    def __init__(self, text):
        super().__init__(None, text)

    def __str__(self):
        return self.smtp_error


class Stopped(Exception):
    """The worker was told to stop (SIGTERM) while waiting for the server."""


class MaybeDelivered(Exception):
    """The message data went out but no final reply came (timeout, lost connection, stop):
    the server may have accepted it. `cause` is what happened."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class LostClaim(Exception):
    """Our claim on the mail was lost before its data went out (another worker has it)."""


class _Deadlined:
    """Replaces smtplib's reply reading with one bounded by `deadline` (time.monotonic())."""
    deadline: float | None = None
    stop = staticmethod(lambda: False)
    _buf = b""
    _stop_seen = None

    def expect_within(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def _readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line, self._buf = self._buf[:end + 1], self._buf[end + 1:]
                return line
            if len(self._buf) > _MAXLINE:
                self.close()
                raise smtplib.SMTPResponseException(500, "Line too long.")
            left = (self.deadline - time.monotonic()) if self.deadline else self.timeout
            if left <= 0:
                raise TimeoutError("timed out waiting for the server's reply")
            if self.stop():
                if self._stop_seen is None:
                    self._stop_seen = time.monotonic()
                elif time.monotonic() - self._stop_seen > _GRACE:
                    raise Stopped("stopping")
            self.sock.settimeout(min(left, _SLICE))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            self._buf += chunk

    def getreply(self):
        """smtplib's reply parser (multi-line replies, enhanced codes), over `_readline`."""
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        lines = []
        while True:
            line = self._readline()
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
                break
            if line[3:4] != b"-":
                break
        return code, b"\n".join(lines)

    def send(self, s):
        if self.sock is not None:
            left = (self.deadline - time.monotonic()) if self.deadline else self.timeout
            self.sock.settimeout(max(0.01, left))  # sendall: a bound on the whole write
        super().send(s)

    def starttls(self, *args, **kwargs):
        self._buf = b""
        return super().starttls(*args, **kwargs)

    def close(self):
        self._buf = b""
        super().close()


class Client(_Deadlined, smtplib.SMTP):
    """A plain or STARTTLS connection."""


class SSLClient(_Deadlined, smtplib.SMTP_SSL):
    """An implicit-TLS connection (port 465)."""


def connect(server: Server, stop=None) -> smtplib.SMTP:
    """An open, greeted (and if asked, encrypted and logged-in) SMTP connection, all of it
    within `server.connect_timeout`."""
    if server.encryption == "ssl":
        conn = SSLClient(timeout=server.connect_timeout, context=server.tls_context())
    else:
        conn = Client(timeout=server.connect_timeout)
    if stop is not None:
        conn.stop = stop
    conn._host = server.host  # smtplib names the TLS server_hostname after it (certificate check)
    conn.expect_within(server.connect_timeout)
    try:
        conn.connect(server.host, server.port)
        conn.ehlo()
        if server.encryption == "starttls":
            conn.starttls(context=server.tls_context())
            conn.ehlo()
        if server.user and server.encryption == "none" and not server.allow_plaintext_auth \
                and not _is_loopback(conn):
            raise PlaintextAuthRefused(
                f"not sending the password of {server.user!r} in clear to {server.host}:{server.port} "
                f"(no TLS and not loopback): use encryption starttls or ssl (or, knowingly, "
                f"smtp_allow_plaintext_auth = true)")
        if server.user:
            conn.login(server.user, os.environ.get(server.password_env or "", ""))
    except BaseException:
        close_quietly(conn)
        raise
    conn.timeout = server.timeout
    return conn


def _is_loopback(conn) -> bool:
    """Whether the connected peer is this machine (the password never leaves it)."""
    try:
        return ipaddress.ip_address(conn.sock.getpeername()[0].split("%", 1)[0]).is_loopback
    except (OSError, ValueError, AttributeError):
        return False


def offers_smtputf8(conn) -> bool:
    return bool(conn.does_esmtp and conn.has_extn("smtputf8"))


def test_server(server: Server) -> str:
    """Connect, EHLO (and TLS/login as configured); return the server's EHLO answer."""
    conn = connect(server)
    try:
        conn.expect_within(server.timeout)
        code, answer = conn.ehlo()
        return f"{code} {answer.decode(errors='replace')}"
    finally:
        quit_quietly(conn)


def alive(conn, server: Server) -> bool:
    """NOOP on a reused connection: False when it is gone."""
    try:
        conn.expect_within(min(server.timeout, 30.0))
        return conn.noop()[0] == 250
    except (smtplib.SMTPException, OSError, Stopped):
        return False


def quit_quietly(conn) -> None:
    try:
        if getattr(conn, "sock", None) is not None and hasattr(conn, "expect_within"):
            conn.expect_within(5.0)
        conn.quit()
    except (smtplib.SMTPException, OSError, Stopped):
        close_quietly(conn)


def close_quietly(conn) -> None:
    try:
        conn.close()
    except OSError:
        pass


def send_one(conn, server: Server, sender: str, rcpt: str, data: bytes,
             while_waiting=None, before_data=None, smtputf8: bool = False) -> str:
    """MAIL, RCPT, DATA for one recipient, raising smtplib's own exceptions like
    `SMTP.sendmail`; returns the server's final reply. Addresses here are validated bare
    addresses, so the header parsing `sendmail` does to quote them is skipped. When the
    server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write: two round
    trips per mail instead of four.

    `while_waiting()` runs once the first command is on its way (the caller's database
    work overlaps the server's round trip); `before_data()` runs when the server is ready
    for the data and returns False when the mail must not go (LostClaim is raised and the
    connection closed, which makes the server drop the transaction). Once the data went
    out, a timeout, a lost connection or a stop raises MaybeDelivered.

    `smtputf8`: the mail has a non-ASCII address (the caller checked `offers_smtputf8`):
    MAIL carries SMTPUTF8 (RFC 6531) and the commands go as UTF-8."""
    encoding = "utf-8" if smtputf8 else "ascii"
    options = ""
    if smtputf8:
        options = " SMTPUTF8" + (" BODY=8BITMIME" if conn.has_extn("8bitmime") else "")
    conn.command_encoding = encoding
    conn.expect_within(server.timeout)
    if conn.does_esmtp and conn.has_extn("pipelining"):
        conn.send(f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode(encoding))
        if while_waiting is not None:
            while_waiting()
        replies = [conn.getreply() for _ in range(3)]
        (mail_code, mail_resp), (rcpt_code, rcpt_resp), (data_code, data_resp) = replies
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            conn.send(b".\r\n")  # RFC 2920: end an accepted DATA with no recipient
            conn.getreply()
        if mail_code != 250:
            _reset(conn, mail_code)
            raise smtplib.SMTPSenderRefused(mail_code, mail_resp, sender)
        if rcpt_code not in (250, 251):
            _reset(conn, rcpt_code)
            raise smtplib.SMTPRecipientsRefused({rcpt: (rcpt_code, rcpt_resp)})
        if data_code != 354:
            _reset(conn, data_code)
            raise smtplib.SMTPDataError(data_code, data_resp)
    else:
        conn.putcmd("mail", f"FROM:<{sender}>{options}")
        if while_waiting is not None:
            while_waiting()
        code, resp = conn.getreply()
        if code != 250:
            _reset(conn, code)
            raise smtplib.SMTPSenderRefused(code, resp, sender)
        conn.expect_within(server.timeout)
        conn.putcmd("rcpt", f"TO:<{rcpt}>")
        code, resp = conn.getreply()
        if code not in (250, 251):
            _reset(conn, code)
            raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
        conn.expect_within(server.timeout)
        conn.putcmd("data")
        code, resp = conn.getreply()
        if code != 354:
            _reset(conn, code)
            raise smtplib.SMTPDataError(code, resp)
    if before_data is not None and not before_data():
        close_quietly(conn)
        raise LostClaim()
    conn.expect_within(server.data_timeout)
    try:
        conn.send(dot_stuffed(data) + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, resp = conn.getreply()
    except (smtplib.SMTPServerDisconnected, OSError, Stopped) as exc:
        close_quietly(conn)
        raise MaybeDelivered(exc) from exc
    if code != 250:
        _reset(conn, code)
        raise smtplib.SMTPDataError(code, resp)
    return f"{code} {resp.decode(errors='replace')}"  # e.g. "250 2.0.0 Ok: queued as 4BcD"


def _reset(conn, code):
    if code == 421:  # the server is closing the connection
        conn.close()
        return
    try:
        conn.expect_within(min(conn.timeout, 30.0))
        conn.rset()
    except (smtplib.SMTPServerDisconnected, OSError, Stopped):
        close_quietly(conn)
