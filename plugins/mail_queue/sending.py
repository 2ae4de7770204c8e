"""Sending: claim due mails with a lease, commit the claim, talk SMTP with no transaction
open, and make each mail's outcome durable as soon as the server answered (in the outcome
journal, applied to the mails with the batch: see `ledger.Ledger` and `journal`).

A worker killed mid-send leaves its claims behind; they are taken over once their lease
expires, so a mail is never lost. The one mail that was in the middle of its conversation
is in doubt (it may have been delivered): it is retried once, later, with the same
Message-Id, so at most one copy per crash is repeated and receivers can de-duplicate it.
A working worker renews its lease and re-checks its claim before each mail's data goes
out, so a slow server or a paused process never makes two workers send the same mail.

Mails for different servers are sent concurrently (a thread per server), so one server's
stall never holds another server's mails."""
import collections
import concurrent.futures
import datetime as dt
import smtplib
import ssl

import peewee as pw

from postroom.core import emails, scheduler
from postroom.core.clock import aware
from postroom.core.db import JSONField, run_prepared
from postroom.core.errors import PostroomError

from . import addressing, compose, daily_limit, journal_ahead, pacing, servers, signing, smtp_client
from .claims import claim, claimable, due_condition, free
from .hourly import count_hour
from .ledger import Ledger
from .metrics import count_outcomes
from .models import OutgoingMail
from .outcomes import FAILED_VIA, announce, finish, smtp_reason
from .settings import ACTION_CODE, batch_size, chunks

MAX_SERVER_THREADS = 8


def _in_doubt_reason(row) -> str:
    return (f"Mail delivery may have succeeded: the worker sending it (since "
            f"{aware(row.sending_since):%Y-%m-%d %H:%M:%S} UTC) stopped before the server's answer "
            f"was recorded")


def _maybe_reason(server, exc: smtp_client.MaybeDelivered) -> str:
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        what = f"no answer to the end of the data within {server.data_timeout:g} s"
    elif isinstance(cause, smtp_client.Stopped):
        what = "the worker was stopped while waiting for the answer to the end of the data"
    else:
        what = f"the connection was lost after the data was sent ({type(cause).__name__}: {cause})"
    return f"{FAILED_VIA.format(server.name)} Mail delivery may have succeeded: {what}"


def _cert_reason(server, exc) -> str:
    return (f"{FAILED_VIA.format(server.name)} The server's TLS certificate failed "
            f"verification ({getattr(exc, 'verify_message', None) or exc}): a configuration "
            f"problem, not retried. Fix the certificate or smtp_ca_file, then retry the mail.")


def _connection(host, server, pool, stop):
    conn = pool.get(server.name)
    if conn is not None and not smtp_client.alive(conn, server):
        smtp_client.close_quietly(conn)
        conn = None
    if conn is None:
        pool.pop(server.name, None)
        conn = smtp_client.connect(server, stop)
        pool[server.name] = conn
    return conn


def _drop(pool, server):
    conn = pool.pop(server.name, None)
    if conn is not None:
        smtp_client.close_quietly(conn)


def _send_group(host, server, rows, pool, ledger, date, prepare, signer, pacer, stop, should_stop):
    """Send `rows` through `server`, one conversation each over a reused connection."""
    granted, day = daily_limit.reserve(host, server, len(rows))
    if granted < len(rows):
        reason = daily_limit.limit_reason(host, server)
        for row in rows[granted:]:
            ledger.pending.fail(row, "mail_limit", reason, True)
        rows = rows[:granted]
    used = 0
    checked = False  # a reused connection gets one NOOP per batch, not one per mail
    try:
        for i, row in enumerate(rows):
            if should_stop() or stop():
                ledger.pending.released.extend(rows[i:])
                break
            if not ledger.holds(row):
                continue  # another worker took it over while we were busy
            domain = pacing.domain_of(row.email_to)
            if domain in pacer.waits:  # it asked us to slow down earlier in this batch
                ledger.pending.defer(row, *pacer.waits[domain])
                continue
            try:
                conn = pool.get(server.name) if checked else None
                if conn is not None and conn.sock is None:  # closed after a 421: a new one
                    pool.pop(server.name, None)
                    conn = None
                if conn is None:
                    conn = _connection(host, server, pool, stop)
                    checked = True
            except smtp_client.Stopped:
                ledger.pending.released.extend(rows[i:])
                break
            except ssl.SSLCertVerificationError as exc:
                host.log.error("mail: server %s: %s", server.label, _cert_reason(server, exc))
                for r in rows[i:]:
                    ledger.pending.fail(r, "mail_smtp", _cert_reason(server, exc), True)
                break
            except (smtplib.SMTPException, OSError) as exc:
                permanent = isinstance(exc, smtplib.SMTPAuthenticationError)
                reason = smtp_reason(server.name, exc, getattr(exc, "smtp_code", None),
                                     getattr(exc, "smtp_error", None))
                host.log.warning("mail: cannot connect to server %s: %s", server.label, reason)
                for r in rows[i:]:
                    ledger.pending.fail(r, "mail_smtp", reason, permanent)
                break
            utf8 = emails.needs_smtputf8(row.email_to)
            if utf8 and not smtp_client.offers_smtputf8(conn):
                ledger.pending.fail(row, "mail_email_invalid",
                                    addressing.smtputf8_refusal(row.email_to, server.name), True)
                continue
            # PostgreSQL: the previous mail's outcome (and this one's mark) is written while
            # this one is composed and its commands answered, and confirmed before its data.
            ledger.ahead(row)

            def while_waiting(row=row):
                # Otherwise it is committed while the server answers this mail's commands.
                ledger.flush(mark=row)

            def before_data(row=row):
                return ledger.confirmed(row) and ledger.holds(row) and ledger.still_ours(row)
            try:
                envelope_from = addressing.envelope_from(host, row)
                data = compose.final_bytes(host, row, envelope_from, date, prepare, signer)
                reply = smtp_client.send_one(conn, server, envelope_from, emails.wire_address(row.email_to),
                                             data, while_waiting, before_data, smtputf8=utf8)
                ledger.pending.sent.append((row, server.name, reply))
                pacer.accepted(domain)
                used += 1
            except smtp_client.LostClaim:
                pool.pop(server.name, None)
                if ledger.holds(row):  # the previous mail's outcome was not confirmed in time
                    ledger.pending.released.append(row)
                else:
                    host.log.info("mail %s msgid=%s: claim lost to another worker before its data went "
                                  "out; not sent by this worker", row.id, row.message_id)
            except smtp_client.MaybeDelivered as exc:
                pool.pop(server.name, None)
                used += 1  # it may have left: its slot stays counted
                ledger.pending.fail(row, "mail_smtp", _maybe_reason(server, exc), False, in_doubt=True)
                ledger.pending.released.extend(rows[i + 1:])
                break
            except smtp_client.Stopped:
                _drop(pool, server)
                ledger.pending.released.extend(rows[i:])
                break
            except pw.PeeweeException:
                _drop(pool, server)
                raise
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                if ledger.holds(row):
                    _refused(pacer, ledger.pending, row, domain, smtp_reason(server.name, exc, code, text),
                             code, text, at_rcpt=True)
            except smtplib.SMTPServerDisconnected as exc:
                _lost(host, server, pool, ledger, row, rows[i + 1:], exc)
                break
            except smtplib.SMTPResponseException as exc:  # SMTPDataError, SMTPSenderRefused, ...
                if ledger.holds(row):
                    _refused(pacer, ledger.pending, row, domain,
                             smtp_reason(server.name, exc, exc.smtp_code, exc.smtp_error),
                             exc.smtp_code, exc.smtp_error)
            except (smtplib.SMTPException, OSError) as exc:  # timeouts, resets before the data
                _lost(host, server, pool, ledger, row, rows[i + 1:], exc)
                break
            except PostroomError as exc:  # e.g. header injection found while building it
                ledger.pending.fail(row, "unknown", f"Mail refused before sending: {exc}", True)
            except Exception as exc:  # noqa: BLE001 - one odd mail must not stop the batch
                host.log.exception("mail %s msgid=%s: unexpected error while sending", row.id, row.message_id)
                ledger.pending.fail(row, "unknown", f"{type(exc).__name__}: {exc}", True)
    finally:
        daily_limit.release(host, server, granted - used, day)
    ledger.flush()


def _refused(pacer, pending, row, domain, reason, code, text, at_rcpt=False):
    """A refusal in the server's words: a "slow down" (4.7.x, 421 at RCPT) backs the domain off and
    defers the mail to the end of the back-off (an attempt; past its lifetime it fails like
    any temporary failure); any other refusal fails it (for good when 5xx)."""
    if not pacing.is_throttle(code, text, at_rcpt):
        pending.fail(row, "mail_smtp", reason, code >= 500)
        return
    until, why = pacer.throttled(domain, reason)
    if row.expires_at is not None and pacer.now >= aware(row.expires_at):
        pending.fail(row, "mail_smtp", reason, False)  # recorded as exception: its lifetime ran out
    else:
        pending.defer(row, until, why, attempted=True)


def _lost(host, server, pool, ledger, row, rest, exc):
    """The connection died during `row`, before its data went out: it is retried later;
    the rest were not attempted and go back to the queue untouched."""
    _drop(pool, server)
    reason = smtp_reason(server.name, exc)
    host.log.warning("mail %s msgid=%s: connection to %s lost: %s; %s mail(s) of the batch put back",
                     row.id, row.message_id, server.label, reason, len(rest))
    if ledger.holds(row):
        ledger.pending.fail(row, "mail_smtp", reason, False)
    ledger.pending.released.extend(rest)


M_ = OutgoingMail
# What sending reads (converting every column of every row was a tenth of a drain).
SEND_FIELDS = (M_.id, M_.chatter_message_id, M_.notification_id, M_.ref, M_.email_from,
               M_.email_to, M_.recipient_name, M_.subject, M_.body_html, M_.body_text, M_.headers,
               M_.message_id, M_.in_reply_to, M_.references, M_.reply_to, M_.attempts,
               M_.expires_at, M_.bulk, M_.auto_delete, M_.attachment_ids, M_.sending_since, M_.doubtful)


SendRow = collections.namedtuple("SendRow", [f.name for f in SEND_FIELDS])
# Only these columns need converting from what the driver returns (dates, JSON, SQLite's
# 0/1 booleans); peewee converting all 22 per row was a tenth of the drain's time.
_CONVERTED = [(i, f.python_value, not isinstance(f, JSONField)) for i, f in enumerate(SEND_FIELDS)
              if type(f) not in (pw.IntegerField, pw.CharField, pw.TextField, pw.ForeignKeyField)
              and not isinstance(f, pw.AutoField)]  # the id is the driver's integer already


def _claimed_rows(host, token) -> list:
    """The mails claimed under `token`, in id order, as read-only named tuples (what sending
    and postroom_mail_prepare need), with the SQL rendered once per engine. A date or flag
    is converted once per distinct stored value (a batch enqueued together shares its
    expiry: parsing it on every row was a twentieth of a claim); a JSON document, which
    the row's reader may change, on every row."""
    cursor = run_prepared(host.db, "claimed-rows", lambda t: OutgoingMail.select(*SEND_FIELDS).where(
        OutgoingMail.lease_owner == t).order_by(OutgoingMail.id), token)
    rows = []
    seen = [{} for _ in _CONVERTED]
    for raw in cursor.fetchall():
        values = list(raw)
        for (i, convert, shareable), memo in zip(_CONVERTED, seen):
            value = values[i]
            if value is None:
                continue
            if not shareable:
                values[i] = convert(value)
            else:
                found = memo.get(value)
                values[i] = found if found is not None else memo.setdefault(value, convert(value))
        rows.append(SendRow(*values))
    return rows


def _stopping(host):
    """SIGTERM (postroom serve's stop event): abandon the conversation in progress."""
    event = getattr(host, "serve_stop", None)
    return event.is_set if event is not None else (lambda: False)


def deliver(host, token, pool, run=None, ahead=None) -> collections.Counter:
    """Send the mails claimed under `token`, writing each outcome as it comes; returns
    counts (sent, failed, retry, released). `ahead`: a `journal_ahead.Ahead` for the
    appends of a single conversation (the threads of several servers append synchronously)."""
    rows = _claimed_rows(host, token)
    stop = _stopping(host)
    should_stop = run.should_stop if run is not None else (lambda: False)
    first = Ledger(host, token, [r.id for r in rows], stop, ahead)
    chooser = servers.Chooser(host)
    groups = collections.OrderedDict()
    sendable = []
    for row in rows:
        problem = addressing.recipient_problem(row.email_to) or addressing.sender_problem(row.email_from)
        if problem:
            first.pending.fail(row, problem[0], problem[1], True)
        elif row.sending_since is not None:
            # Taken over from a worker that died (or lost its claim) mid-conversation.
            first.pending.fail(row, "mail_smtp", _in_doubt_reason(row), False, in_doubt=True)
        else:
            sendable.append(row)
    pacer, sendable, waiting = pacing.split(host, sendable)
    for row, until, reason in waiting:
        first.pending.defer(row, until, reason)
    for row in sendable:
        server = chooser.for_sender(compose.parse_address(row.email_from)[1])
        groups.setdefault(server, []).append(row)
    date = compose.format_date(host.clock.now())
    prepare = bool(host.hook.postroom_mail_prepare.get_hookimpls())
    signer = signing.Signer(host)
    ledgers = [first]
    if len(groups) <= 1:
        for server, group in groups.items():
            _send_group(host, server, group, pool, first, date, prepare, signer, pacer, stop, should_stop)
    else:
        first.flush()

        def one(server, group):
            ledger = Ledger(host, token, [r.id for r in group], stop)
            ledgers.append(ledger)
            try:
                _send_group(host, server, group, pool, ledger, date, prepare, signer, pacer, stop, should_stop)
            finally:
                host.db.close()  # this thread's own connection
        with concurrent.futures.ThreadPoolExecutor(min(MAX_SERVER_THREADS, len(groups)),
                                                   thread_name_prefix="smtp") as threads:
            for future in [threads.submit(one, s, g) for s, g in groups.items()]:
                future.result()
    pacer.save()
    first.flush()
    # The journal, to the mails: set-based, one transaction, completing the sent ones (their
    # notifications, auto_delete); nothing of this claim is left for `finish`.
    first.apply(others=ledgers[1:], final=True)
    with host.transaction():  # the /metrics counters and the chart's hour: one upsert each per batch
        sent = sum(len(ledger.sent_info) for ledger in ledgers)
        failed = [info for ledger in ledgers for info in ledger.failed_info]
        count_outcomes(sent, failed)
        count_hour(host, sent, failed)
    counts = collections.Counter()
    for ledger in ledgers:
        counts.update(ledger.counts())
        announce(host, ledger.sent_info, ledger.failed_info)
    counts["processed"] = counts["sent"] + counts["failed"] + counts["retry"]
    return counts


def _close(pool):
    for conn in pool.values():
        smtp_client.quit_quietly(conn)
    pool.clear()


def _run(host, claim_kwargs, limit=None, run=None) -> dict:
    owner = scheduler.worker_name("mail")
    pool, totals = {}, collections.Counter()
    stop = _stopping(host)
    ahead = journal_ahead.for_database(host.db)
    try:
        while True:
            n = batch_size(host) if limit is None else min(batch_size(host), limit - totals["processed"])
            if n <= 0 or stop():
                break
            token, taken = claim(host, owner, n, **claim_kwargs)
            if not taken:
                break
            totals.update(deliver(host, token, pool, run, ahead))
            if run is not None and run.should_stop():
                break
    finally:
        _close(pool)
        if ahead is not None:
            ahead.close()
    return dict(totals)


def process_queue(host, limit=None, run=None) -> dict:
    """Run the queue once: send what is due in batches over reused connections."""
    if host.in_transaction:
        raise PostroomError("the mail queue cannot run inside a transaction (it talks SMTP); "
                            "call it after the commit")
    daily_limit.requeue_after_reset(host)
    # Sent mails a dead worker could not complete (its lease ran out), with what it had
    # only journaled: complete them.
    now = host.clock.now()
    left = finish(host, OutgoingMail.lease_until < now, dead_before=now)
    if left:
        host.log.info("mail queue: completed %s sent mail(s) left by a stopped worker", len(left))
        announce(host, left, [])
    totals = _run(host, {}, limit, run)
    now = host.clock.now()
    # Only what this worker could claim now counts: mails another worker holds are its
    # work, and counting them (or those waiting for a slot of their domain) would make an
    # idle worker re-run the action in a busy loop.
    remaining = claimable(host, now)
    if run is not None:
        run.progress(totals.get("processed", 0), remaining)
        held = (OutgoingMail.select(OutgoingMail.lease_until).where(due_condition(now) & ~free(now))
                .order_by(OutgoingMail.lease_until).limit(1).scalar())
        if not remaining and held is not None:
            # Look again when those leases end: if their worker died, its mails must not
            # wait for the next interval.
            with host.transaction():
                scheduler.trigger(host, ACTION_CODE, aware(held) + dt.timedelta(seconds=1))
    result = {"processed": 0, "sent": 0, "failed": 0, "retry": 0} | {
        k: totals.get(k, 0) for k in ("processed", "sent", "failed", "retry")} | {"remaining": remaining}
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
