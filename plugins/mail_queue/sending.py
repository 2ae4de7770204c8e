"""Sending: claim due mails with a lease, commit the claim, talk SMTP with no transaction
open, then record every outcome set-based and tell the other plugins after commit.

A worker killed mid-send leaves its claims behind; they are taken over once their lease
expires, so a mail is never lost (a mail in flight then may leave twice, with the same
Message-Id, which receivers de-duplicate on)."""
import collections
import datetime as dt
import smtplib

import peewee as pw

from postroom.core import emails, scheduler
from postroom.core.clock import aware
from postroom.core.errors import PostroomError

from . import addressing, compose, daily_limit, pacing, servers, signing, smtp_client
from .claims import claim, due_condition, free
from .models import OutgoingMail
from .outcomes import Outcome, record, smtp_reason
from .settings import ACTION_CODE, batch_size, chunks


def _send_group(host, server, rows, pool, outcome, date, prepare, signer, pacer):
    granted = daily_limit.reserve(host, server, len(rows))
    if granted < len(rows):
        reason = daily_limit.limit_reason(host, server)
        for row in rows[granted:]:
            outcome.fail(row, "mail_limit", reason, True)
        rows = rows[:granted]
    if not rows:
        return
    used = 0
    try:
        conn = pool.get(server.name)
        if conn is not None and not smtp_client.alive(conn):
            conn = None
        if conn is None:
            conn = smtp_client.connect(server)
            pool[server.name] = conn
    except (smtplib.SMTPException, OSError) as exc:
        pool.pop(server.name, None)
        permanent = isinstance(exc, smtplib.SMTPAuthenticationError)
        reason = smtp_reason(server.name, exc, getattr(exc, "smtp_code", None), getattr(exc, "smtp_error", None))
        host.log.warning("mail: cannot connect to server %s: %s", server.label, reason)
        for row in rows:
            outcome.fail(row, "mail_smtp", reason, permanent)
        daily_limit.release(host, server, granted)
        return
    for i, row in enumerate(rows):
        domain = pacing.domain_of(row.email_to)
        if domain in pacer.waits:  # it asked us to slow down earlier in this batch
            outcome.defer(row, *pacer.waits[domain])
            continue
        if conn.sock is None:  # closed after a 421 ("closing connection"): a new one for the rest
            try:
                conn = pool[server.name] = smtp_client.connect(server)
            except (smtplib.SMTPException, OSError) as exc:
                _lost(host, server, pool, outcome, row, rows[i + 1:], exc)
                break
        envelope_from = addressing.envelope_from(host, row)
        utf8 = emails.needs_smtputf8(row.email_to)
        if utf8 and not smtp_client.offers_smtputf8(conn):
            outcome.fail(row, "mail_email_invalid", addressing.smtputf8_refusal(row.email_to, server.name), True)
            continue
        try:
            data = compose.final_bytes(host, row, envelope_from, date, prepare, signer)
            reply = smtp_client.send_one(conn, envelope_from, emails.wire_address(row.email_to), data,
                                         smtputf8=utf8)
            outcome.sent.append((row, server.name))
            pacer.accepted(domain)
            used += 1
            host.log.info("mail %s sent to %s via %s msgid=%s notification=%s ref=%s reply=%s", row.id,
                          row.email_to, server.name, row.message_id, row.notification_id, row.ref,
                          reply)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            _refused(pacer, outcome, row, domain, smtp_reason(server.name, exc, code, text), code, text)
        except smtplib.SMTPServerDisconnected as exc:
            _lost(host, server, pool, outcome, row, rows[i + 1:], exc)
            break
        except smtplib.SMTPResponseException as exc:  # SMTPDataError, SMTPSenderRefused, ...
            _refused(pacer, outcome, row, domain, smtp_reason(server.name, exc, exc.smtp_code, exc.smtp_error),
                     exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:  # timeouts, resets
            _lost(host, server, pool, outcome, row, rows[i + 1:], exc)
            break
        except PostroomError as exc:  # e.g. header injection found while building it
            outcome.fail(row, "unknown", f"Mail refused before sending: {exc}", True)
        except Exception as exc:  # noqa: BLE001 - one odd mail must not stop the batch
            host.log.exception("mail %s: unexpected error while sending", row.id)
            outcome.fail(row, "unknown", f"{type(exc).__name__}: {exc}", True)
    daily_limit.release(host, server, granted - used)


def _refused(pacer, outcome, row, domain, reason, code, text):
    """A refusal in the server's words: a "slow down" (421, 4.7.x) backs the domain off and
    defers the mail to the end of the back-off (an attempt; past its lifetime it fails like
    any temporary failure); any other refusal fails it (for good when 5xx)."""
    if not pacing.is_throttle(code, text):
        outcome.fail(row, "mail_smtp", reason, code >= 500)
        return
    until, why = pacer.throttled(domain, reason)
    if row.expires_at is not None and pacer.now >= aware(row.expires_at):
        outcome.fail(row, "mail_smtp", reason, False)  # recorded as exception: its lifetime ran out
    else:
        outcome.defer(row, until, why, attempted=True)


def _lost(host, server, pool, outcome, row, rest, exc):
    """The connection died during `row`: it is retried later; the rest were not attempted
    and go back to the queue untouched (never lost, never sent twice)."""
    conn = pool.pop(server.name, None)
    if conn is not None:
        smtp_client.close_quietly(conn)
    reason = smtp_reason(server.name, exc)
    host.log.warning("mail %s: connection to %s lost: %s; %s mail(s) of the batch put back",
                     row.id, server.label, reason, len(rest))
    outcome.fail(row, "mail_smtp", reason, False)
    outcome.released.extend(rest)


M_ = OutgoingMail
# What sending reads (converting every column of every row was a tenth of a drain).
SEND_FIELDS = (M_.id, M_.chatter_message_id, M_.notification_id, M_.ref, M_.email_from,
               M_.email_to, M_.recipient_name, M_.subject, M_.body_html, M_.body_text, M_.headers,
               M_.message_id, M_.in_reply_to, M_.references, M_.reply_to, M_.attempts,
               M_.expires_at, M_.bulk, M_.auto_delete, M_.attachment_ids)


def deliver(host, token, pool) -> Outcome:
    """Send the mails claimed under `token` and record the outcomes."""
    # Named tuples, not model instances: a fifth of the cost per row, and read-only is
    # what sending (and postroom_mail_prepare) needs.
    rows = list(OutgoingMail.select(*SEND_FIELDS).where(OutgoingMail.lease_owner == token)
                .order_by(OutgoingMail.id).namedtuples())
    outcome = Outcome()
    chooser = servers.Chooser(host)
    groups = collections.OrderedDict()
    sendable = []
    for row in rows:
        problem = addressing.recipient_problem(row.email_to) or addressing.sender_problem(row.email_from)
        if problem:
            outcome.fail(row, problem[0], problem[1], True)
            continue
        sendable.append(row)
    pacer, sendable, waiting = pacing.split(host, sendable)
    for row, until, reason in waiting:
        outcome.defer(row, until, reason)
    for row in sendable:
        server = chooser.for_sender(compose.parse_address(row.email_from)[1])
        groups.setdefault(server, []).append(row)
    date = compose.format_date(host.clock.now())
    prepare = bool(host.hook.postroom_mail_prepare.get_hookimpls())
    signer = signing.Signer(host)
    for server, group in groups.items():
        _send_group(host, server, group, pool, outcome, date, prepare, signer, pacer)
    pacer.save()
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
        smtp_client.quit_quietly(conn)
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
    remaining = OutgoingMail.select().where(due_condition(now) & free(now)).count()
    if run is not None:
        run.progress(totals.get("processed", 0), remaining)
        held = (OutgoingMail.select(OutgoingMail.lease_until).where(due_condition(now) & ~free(now))
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
