"""Sending: claim due mails with a lease, commit the claim, talk SMTP with no transaction
open, then record every outcome set-based and tell the other plugins after commit.

A worker killed mid-send leaves its claims behind; they are taken over once their lease
expires, so a mail is never lost (a mail in flight then may leave twice, with the same
Message-Id, which receivers de-duplicate on)."""
import collections
import datetime as dt
import email
import email.policy
import functools
import re
import smtplib
import uuid

import peewee as pw

from postroom.core import emails, scheduler, tokens
from postroom.core.clock import aware
from postroom.core.db import is_postgres
from postroom.core.errors import PostroomError

from . import compose, servers
from .models import OutgoingMail
from .outcomes import Outcome, chunks, record, smtp_reason
from .queue import ACTION_CODE


def lease(host) -> dt.timedelta:
    return dt.timedelta(seconds=host.config.getfloat("mail_lease_seconds", 300.0))


def batch_size(host) -> int:
    return max(1, host.config.getint("mail_batch_size", 200))


def due_condition(now):
    return ((OutgoingMail.state == "outgoing")
            & (OutgoingMail.scheduled_at.is_null() | (OutgoingMail.scheduled_at <= now))
            & (OutgoingMail.next_attempt_at.is_null() | (OutgoingMail.next_attempt_at <= now)))


def _free(now):
    return OutgoingMail.lease_until.is_null() | (OutgoingMail.lease_until < now)


def claim(host, owner: str, limit: int, where=None, due=True) -> tuple[str, int]:
    """Lease up to `limit` outgoing mails under a fresh claim token and commit; returns
    (token, how many). Later statements address the claimed rows by their token, so no
    statement carries a list of thousands of ids.

    On PostgreSQL the candidates are locked FOR UPDATE SKIP LOCKED so workers never wait
    on each other nor take the same row; SQLite's write lock serialises claims."""
    now = host.clock.now()
    token = f"{owner}:{uuid.uuid4().hex[:12]}"
    cond = _free(now) & (due_condition(now) if due else (OutgoingMail.state == "outgoing"))
    if where is not None:
        cond &= where
    with host.transaction():
        candidates = OutgoingMail.select(OutgoingMail.id).where(cond).order_by(OutgoingMail.id).limit(limit)
        if is_postgres(host.db):
            candidates = candidates.for_update(skip_locked=True)
        taken = (OutgoingMail.update(lease_owner=token, lease_until=now + lease(host))
                 .where(OutgoingMail.id.in_(candidates) & _free(now)).execute())
    return token, taken


@functools.lru_cache(maxsize=1024)
def sender_problem(email_from: str | None):
    """(failure_type, reason) when `email_from` cannot be used as a sender, else None."""
    if not email_from or not compose.parse_address(email_from)[1]:
        return "mail_from_missing", "The mail has no sender address (From)."
    addr = compose.parse_address(email_from)[1]
    if not emails.is_valid(addr):
        return "mail_from_invalid", f"The sender address {addr!r} is not a valid email address."
    if addr.lower().endswith(".invalid"):
        return "mail_from_invalid", (f"The sender address {addr} is a temporary address; set a real "
                                     f"one (postroom admin set-email ADDRESS, or mail_from in the config).")
    return None


def _recipient_problem(email_to: str | None):
    if not email_to:
        return "mail_email_missing", "The recipient has no email address."
    # A bare address: the core's own pattern, without the cost of parsing a header.
    if not (emails._ADDR.match(email_to) and not emails.has_control_chars(email_to)):
        return "mail_email_invalid", f"The recipient address {email_to!r} is not a valid email address."
    return None


def bounce_value(mail) -> str:
    if mail.ref:
        return mail.ref
    if mail.notification_id:
        return tokens.notification_token(mail.notification_id)
    return f"m{mail.id}"


def _message_bytes(host, row, envelope_from, date, prepare) -> bytes:
    data = compose.build(row, envelope_from, date, row.reply_to)
    if prepare:
        # Hook implementations get a real EmailMessage (to add headers, sign); only then do
        # we pay for parsing and serialising it.
        message = email.message_from_bytes(data, policy=email.policy.SMTP)
        host.hook.postroom_mail_prepare(host=host, mail=row, message=message)
        data = message.as_bytes(policy=email.policy.SMTP)
    return data


def _send_group(host, server, rows, pool, outcome, date, prepare):
    granted = servers.reserve(host, server, len(rows))
    if granted < len(rows):
        reason = servers.limit_reason(host, server)
        for row in rows[granted:]:
            outcome.fail(row, "mail_limit", reason, True)
        rows = rows[:granted]
    if not rows:
        return
    used = 0
    try:
        conn = pool.get(server.name)
        if conn is not None:
            try:
                conn.noop()
            except (smtplib.SMTPException, OSError):
                conn = None
        if conn is None:
            conn = servers.connect(server)
            pool[server.name] = conn
    except (smtplib.SMTPException, OSError) as exc:
        pool.pop(server.name, None)
        permanent = isinstance(exc, smtplib.SMTPAuthenticationError)
        reason = smtp_reason(server.name, exc, getattr(exc, "smtp_code", None), getattr(exc, "smtp_error", None))
        host.log.warning("mail: cannot connect to server %s: %s", server.label, reason)
        for row in rows:
            outcome.fail(row, "mail_smtp", reason, permanent)
        servers.release(host, server, granted)
        return
    for i, row in enumerate(rows):
        envelope_from = tokens.bounce_address(host, bounce_value(row))
        try:
            data = _message_bytes(host, row, envelope_from, date, prepare)
            reply = _sendmail(conn, envelope_from, row.email_to, data)
            outcome.sent.append((row, server.name))
            used += 1
            host.log.info("mail %s sent to %s via %s msgid=%s notification=%s ref=%s reply=%s", row.id,
                          row.email_to, server.name, row.message_id, row.notification_id, row.ref,
                          reply)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            outcome.fail(row, "mail_smtp", smtp_reason(server.name, exc, code, text), code >= 500)
        except smtplib.SMTPServerDisconnected as exc:
            _lost(host, server, pool, outcome, row, rows[i + 1:], exc)
            break
        except smtplib.SMTPResponseException as exc:  # SMTPDataError, SMTPSenderRefused, ...
            outcome.fail(row, "mail_smtp", smtp_reason(server.name, exc, exc.smtp_code, exc.smtp_error),
                         exc.smtp_code >= 500)
        except (smtplib.SMTPException, OSError) as exc:  # timeouts, resets
            _lost(host, server, pool, outcome, row, rows[i + 1:], exc)
            break
        except PostroomError as exc:  # e.g. header injection found while building it
            outcome.fail(row, "unknown", f"Mail refused before sending: {exc}", True)
        except Exception as exc:  # noqa: BLE001 - one odd mail must not stop the batch
            host.log.exception("mail %s: unexpected error while sending", row.id)
            outcome.fail(row, "unknown", f"{type(exc).__name__}: {exc}", True)
    servers.release(host, server, granted - used)


def _sendmail(conn, sender: str, rcpt: str, data: bytes) -> str:
    """MAIL, RCPT, DATA for one recipient, raising smtplib's own exceptions like
    `SMTP.sendmail`; returns the server's final reply. Addresses here are validated bare
    addresses, so the header parsing `sendmail` does to quote them is skipped. When the
    server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write: two round
    trips per mail instead of four."""
    if conn.does_esmtp and conn.has_extn("pipelining"):
        conn.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode("ascii"))
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
        conn.putcmd("mail", f"FROM:<{sender}>")
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


_DOT_LINE = re.compile(rb"(?m)^\.")  # dot-stuffing (RFC 5321 4.5.2)


def _reset(conn, code):
    if code == 421:  # the server is closing the connection
        conn.close()
        return
    try:
        conn.rset()
    except smtplib.SMTPServerDisconnected:
        pass


def _lost(host, server, pool, outcome, row, rest, exc):
    """The connection died during `row`: it is retried later; the rest were not attempted
    and go back to the queue untouched (never lost, never sent twice)."""
    conn = pool.pop(server.name, None)
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
    reason = smtp_reason(server.name, exc)
    host.log.warning("mail %s: connection to %s lost: %s; %s mail(s) of the batch put back",
                     row.id, server.label, reason, len(rest))
    outcome.fail(row, "mail_smtp", reason, False)
    outcome.released.extend(rest)


M_ = OutgoingMail
# What sending reads (converting every column of every row was a tenth of a drain).
SEND_FIELDS = (M_.id, M_.chatter_message_id, M_.notification_id, M_.ref, M_.email_from,
               M_.email_to, M_.recipient_name, M_.subject, M_.body_html, M_.headers,
               M_.message_id, M_.in_reply_to, M_.references, M_.reply_to, M_.attempts,
               M_.expires_at, M_.bulk, M_.auto_delete)


def deliver(host, token, pool) -> Outcome:
    """Send the mails claimed under `token` and record the outcomes."""
    # Named tuples, not model instances: a fifth of the cost per row, and read-only is
    # what sending (and postroom_mail_prepare) needs.
    rows = list(OutgoingMail.select(*SEND_FIELDS).where(OutgoingMail.lease_owner == token)
                .order_by(OutgoingMail.id).namedtuples())
    outcome = Outcome()
    chooser = servers.Chooser(host)
    groups = collections.OrderedDict()
    for row in rows:
        problem = _recipient_problem(row.email_to) or sender_problem(row.email_from)
        if problem:
            outcome.fail(row, problem[0], problem[1], True)
            continue
        server = chooser.for_sender(compose.parse_address(row.email_from)[1])
        groups.setdefault(server, []).append(row)
    date = compose.format_date(host.clock.now())
    prepare = bool(host.hook.postroom_mail_prepare.get_hookimpls())
    for server, group in groups.items():
        _send_group(host, server, group, pool, outcome, date, prepare)
    try:
        record(host, outcome, token)
    except (pw.OperationalError, pw.InterfaceError) as exc:
        # The database connection died while the mails were on the wire (a killed backend,
        # a failover): they did leave, so write that down on a fresh connection instead of
        # letting the lease send them all again. If the database is really gone this
        # raises again and the lease takes over, as before.
        host.log.warning("mail queue: recording the outcomes of claim %s failed (%s: %s); "
                         "reconnecting once", token, type(exc).__name__, str(exc).strip()[:200])
        host.db.close()
        record(host, outcome, token)
    return outcome


def _close(pool):
    for conn in pool.values():
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            pass
    pool.clear()


def _run(host, claim_kwargs, limit=None, run=None) -> dict:
    owner = scheduler.worker_name("mail")
    pool, totals = {}, collections.Counter()
    try:
        while True:
            n = batch_size(host) if limit is None else min(batch_size(host), limit - totals["processed"])
            if n <= 0:
                break
            token, taken = claim(host, owner, n, **claim_kwargs)
            if not taken:
                break
            outcome = deliver(host, token, pool)
            totals["processed"] += taken - len(outcome.released)
            totals["sent"] += len(outcome.sent)
            totals["failed"] += sum(1 for f in outcome.failed if f[3])
            totals["retry"] += sum(1 for f in outcome.failed if not f[3])
            if run is not None and run.should_stop():
                break
    finally:
        _close(pool)
    return dict(totals)


def process_queue(host, limit=None, run=None) -> dict:
    """Run the queue once: send what is due in batches over reused connections."""
    if host.in_transaction:
        raise PostroomError("the mail queue cannot run inside a transaction (it talks SMTP); "
                            "call it after the commit")
    totals = _run(host, {}, limit, run)
    now = host.clock.now()
    # Only what this worker could claim now counts: mails another worker holds are its
    # work, and counting them would make an idle worker re-run the action in a busy loop.
    remaining = OutgoingMail.select().where(due_condition(now) & _free(now)).count()
    if run is not None:
        run.progress(totals.get("processed", 0), remaining)
        held = (OutgoingMail.select(OutgoingMail.lease_until).where(due_condition(now) & ~_free(now))
                .order_by(OutgoingMail.lease_until).limit(1).scalar())
        if not remaining and held is not None:
            # Look again when those leases end: if their worker died, its mails must not
            # wait for the next interval.
            with host.transaction():
                scheduler.trigger(host, ACTION_CODE, aware(held) + dt.timedelta(seconds=1))
    result = {"processed": 0, "sent": 0, "failed": 0, "retry": 0} | totals | {"remaining": remaining}
    host.log.info("mail queue processed: %s", result)
    return result


def send_ids(host, ids, force=False) -> dict:
    """Send these mails now (urgent mail after commit, `queue send-now`). Inside a
    transaction this waits for the commit: no SMTP conversation under a transaction."""
    ids = list(ids)
    if host.in_transaction:
        host.after_commit(lambda: send_ids(host, ids, force), network=True)
        return {}
    totals = collections.Counter()
    for chunk in chunks(ids):
        totals.update(_run(host, {"where": OutgoingMail.id.in_(chunk), "due": not force}))
    return dict(totals)


def send_message_mails(host, message_id) -> dict:
    """Send the urgent mails of one chatter message (right after its post committed)."""
    return _run(host, {"where": (OutgoingMail.message == message_id) & ~OutgoingMail.bulk})


def handle_action(host, run) -> None:
    """Handler of `Mail: Email Queue Manager`."""
    process_queue(host, run=run)
