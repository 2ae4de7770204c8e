"""The SMTP client of mail_queue: smtplib for the session (connect, EHLO, STARTTLS, AUTH)
and a hand-written mail transaction that pipelines MAIL, RCPT and DATA (RFC 2920)."""
import ipaddress
import os
import re
import smtplib

from .servers import Server

_DOT_LINE = re.compile(rb"(?m)^\.")  # dot-stuffing (RFC 5321 4.5.2)


class PlaintextAuthRefused(smtplib.SMTPAuthenticationError):
    """We refuse to send a password over an unencrypted connection (not the server's doing).
    An SMTPAuthenticationError, so the mail fails at once (retrying cannot help)."""

    def __init__(self, text):
        super().__init__(None, text)

    def __str__(self):
        return self.smtp_error


def connect(server: Server) -> smtplib.SMTP:
    """An open, greeted (and if asked, encrypted and logged-in) SMTP connection."""
    if server.encryption == "ssl":
        conn = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout,
                                context=server.tls_context())
    else:
        conn = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    conn.ehlo()
    if server.encryption == "starttls":
        conn.starttls(context=server.tls_context())
        conn.ehlo()
    if server.user and server.encryption == "none" and not server.allow_plaintext_auth \
            and not _is_loopback(conn):
        close_quietly(conn)
        raise PlaintextAuthRefused(
            f"not sending the password of {server.user!r} in clear to {server.host}:{server.port} "
            f"(no TLS and not loopback): use encryption starttls or ssl (or, knowingly, "
            f"smtp_allow_plaintext_auth = true)")
    if server.user:
        password = os.environ.get(server.password_env or "", "")
        conn.login(server.user, password)
    return conn


def _is_loopback(conn) -> bool:
    """Whether the connected peer is this machine (the password never leaves it)."""
    try:
        return ipaddress.ip_address(conn.sock.getpeername()[0].split("%", 1)[0]).is_loopback
    except (OSError, ValueError, AttributeError):
        return False


def test_server(server: Server) -> str:
    """Connect, EHLO (and TLS/login as configured); return the server's EHLO answer."""
    conn = connect(server)
    try:
        code, answer = conn.ehlo()
        return f"{code} {answer.decode(errors='replace')}"
    finally:
        quit_quietly(conn)


def alive(conn: smtplib.SMTP) -> bool:
    """NOOP on a reused connection: False when it is gone."""
    try:
        conn.noop()
        return True
    except (smtplib.SMTPException, OSError):
        return False


def quit_quietly(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        pass


def close_quietly(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass


def offers_smtputf8(conn: smtplib.SMTP) -> bool:
    return bool(conn.does_esmtp and conn.has_extn("smtputf8"))


def send_one(conn: smtplib.SMTP, sender: str, rcpt: str, data: bytes, smtputf8: bool = False) -> str:
    """MAIL, RCPT, DATA for one recipient, raising smtplib's own exceptions like
    `SMTP.sendmail`; returns the server's final reply. Addresses here are validated bare
    addresses, so the header parsing `sendmail` does to quote them is skipped. When the
    server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write: two round
    trips per mail instead of four. `smtputf8`: the mail has a non-ASCII address (the
    caller checked `offers_smtputf8`): MAIL carries SMTPUTF8 (RFC 6531) and the commands
    go as UTF-8."""
    encoding = "utf-8" if smtputf8 else "ascii"
    options = ""
    if smtputf8:
        options = " SMTPUTF8" + (" BODY=8BITMIME" if conn.has_extn("8bitmime") else "")
    conn.command_encoding = encoding
    if conn.does_esmtp and conn.has_extn("pipelining"):
        conn.send(f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode(encoding))
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
        conn.send(_DOT_LINE.sub(b"..", data) + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, resp = conn.getreply()
    else:
        conn.putcmd("mail", f"FROM:<{sender}>{options}")
        code, resp = conn.getreply()
        if code != 250:
            _reset(conn, code)
            raise smtplib.SMTPSenderRefused(code, resp, sender)
        conn.putcmd("rcpt", f"TO:<{rcpt}>")
        code, resp = conn.getreply()
        if code not in (250, 251):
            _reset(conn, code)
            raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
        code, resp = conn.data(data)
    if code != 250:
        _reset(conn, code)
        raise smtplib.SMTPDataError(code, resp)
    return f"{code} {resp.decode(errors='replace')}"  # e.g. "250 2.0.0 Ok: queued as 4BcD"


def _reset(conn, code):
    if code == 421:  # the server is closing the connection
        conn.close()
        return
    try:
        conn.rset()
    except smtplib.SMTPServerDisconnected:
        pass
