"""Keeping the queue lean (`postroom_vacuum`) and explaining it (`postroom_doctor_checks`)."""
import collections
import dataclasses
import datetime as dt
import smtplib
import ssl

import peewee as pw

from postroom.core import attachments, chatter
from postroom.core import vacuum as core_vacuum
from postroom.core.doctor import Check
from postroom.core.models import CronAction, Notification

from . import daily_limit, hourly, journal, servers, smtp_client
from .addressing import default_from, sender_problem
from .models import DailyCount, HourlyCount, OutgoingMail
from .settings import ACTION_CODE, ACTION_NAME, ATTACHMENT_HOLDER


def _keep(host, key, default_days):
    return dt.timedelta(days=host.config.getfloat(key, default_days))


def vacuum_conditions(host) -> list:
    """Mails that may go: sent past `mail_keep_sent_days` (30), canceled past
    `mail_keep_canceled_days` (30), and failed ones whose recipient's failure was dealt
    with (ignored or resent) past the same 30 days. Never outgoing or scheduled mail, never
    a failure still showing on a red envelope, never a failed mail without notification
    (nobody else would show it). One condition per state (the state index), never ORed:
    see `core.vacuum.sweep`."""
    now = host.clock.now()
    M = OutgoingMail
    failing = Notification.select(Notification.id).where(Notification.status.in_(chatter.FAILED))
    return [
        (M.state == "sent") & (M.sent_at < now - _keep(host, "mail_keep_sent_days", 30)),
        (M.state == "cancel") & (M.updated_at < now - _keep(host, "mail_keep_canceled_days", 30)),
        ((M.state == "exception") & M.notification_id.is_null(False)
         & ~M.notification_id.in_(failing)
         & (M.updated_at < now - _keep(host, "mail_keep_canceled_days", 30))),
    ]


def vacuum(host, batch_size, dry_run):
    """Remove at most `batch_size` old mails and old daily counters per call."""
    cutoff_day = daily_limit.day_of(host.clock.now() - dt.timedelta(days=31))
    counters = DailyCount.day < cutoff_day
    def log_deleted(ids):
        M = OutgoingMail
        for mail_id, message_id, state in M.select(M.id, M.message_id, M.state).where(M.id.in_(ids)).tuples():
            host.log.info("mail %s msgid=%s deleted by the auto-vacuum (%s, past its retention)",
                          mail_id, message_id, state)
    result = core_vacuum.sweep(host, "mail_queue", {"mails": (OutgoingMail, vacuum_conditions(host), log_deleted)},
                               batch_size, dry_run)
    if dry_run:
        result["removed"]["counters"] = (DailyCount.select().where(counters).count()
                                         + HourlyCount.select().where(hourly.vacuum_condition(host)).count())
        result["remaining"] = 0
        return result if any(result["removed"].values()) else None
    # A handful of rows a month (one per server and day): a bounded loop is fine here.
    keys = list(DailyCount.select(DailyCount.server, DailyCount.day).where(counters)
                .order_by(DailyCount.day).limit(batch_size + 1).tuples())
    gone_counters = 0
    for server, day in keys[:batch_size]:
        gone_counters += DailyCount.delete().where((DailyCount.server == server)
                                                   & (DailyCount.day == day)).execute()
    # The chart's hours: two rows an hour, so a month's worth is one small DELETE.
    gone_counters += HourlyCount.delete().where(hourly.vacuum_condition(host)).execute()
    # A direct mail's attachments go once the mail is gone (sent and auto-deleted, or
    # vacuumed above); while it is queued its rows, and so their content, stay.
    gone_files, more_files = attachments.remove_orphans(ATTACHMENT_HOLDER, OutgoingMail.select(OutgoingMail.id),
                                                        batch_size)
    # Outcome-journal rows no claim holds any more (a worker killed after its mails were
    # failed or put back): internal bookkeeping nothing reads, so not reported as removed.
    stale = journal.forget_orphans()
    if stale:
        host.log.info("mail queue vacuum: %s stale outcome-journal row(s) removed", stale)
    gone = result["removed"]["mails"]
    if not gone and not gone_counters and not gone_files and not result["remaining"] and not more_files:
        return None
    host.log.info("mail queue vacuum: %s mail(s), %s counter(s), %s attachment(s) removed", gone,
                  gone_counters, gone_files)
    return {"removed": {"mails": gone, "counters": gone_counters, "attachments": gone_files},
            "remaining": max(result["remaining"], int(len(keys) > batch_size), more_files)}


# --- doctor --------------------------------------------------------------------------

def doctor_checks(host) -> list[Check]:
    from .dkim_doctor import doctor_checks as signing_checks
    checks = []
    for fn in (_plaintext_auth_check, _server_checks, _sender_check, _limit_check, _failure_check, _interval_check,
               signing_checks):
        try:
            result = fn(host)
        except Exception as exc:  # noqa: BLE001 - a check reports, it never raises
            result = [Check(f"mail.{fn.__name__.strip('_')}", "fail", f"{type(exc).__name__}: {exc}", "")]
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def _plaintext_auth_check(host):
    if not servers.plaintext_auth(host):
        return []
    return Check("mail.plaintext_auth", "fail",
                 "smtp_allow_plaintext_auth = true: SMTP passwords may be sent unencrypted to a server "
                 "that is not on this machine",
                 "use --encryption starttls or ssl (smtp_encryption for the default server) and remove "
                 "smtp_allow_plaintext_auth")


def _server_checks(host):
    added = servers.added_servers(host)
    candidates = added or [servers.default_server(host)]
    checks = []
    for server in candidates:
        probe = dataclasses.replace(server, connect_timeout=3.0, timeout=3.0)
        try:
            smtp_client.test_server(probe)
            checks.append(Check("mail.server", "ok", f"outgoing server {server.label} answers EHLO", ""))
        except (smtplib.SMTPException, OSError) as exc:
            hint = ("no outgoing server is configured and the config's default (smtp_host/smtp_port) "
                    "does not answer" if not added else f"server {server.name} does not answer")
            if isinstance(exc, ssl.SSLCertVerificationError):
                hint = (f"the TLS certificate of server {server.name} failed verification "
                        f"({exc.verify_message or exc}); mail through it fails at once")
            checks.append(Check("mail.server", "fail", f"{hint}: {server.host}:{server.port}: "
                                f"{type(exc).__name__}: {exc}",
                                "postroom server add NAME --host HOST --port PORT, then postroom server test NAME"))
    return checks


def _sender_check(host):
    sender = default_from(host)
    problem = sender_problem(sender)
    if problem:
        return Check("mail.sender", "fail", f"the default sender {sender} cannot send: {problem[1]}",
                     "set mail_from in the config (or real domains), or postroom admin set-email ADDRESS")
    return Check("mail.sender", "ok", f"mail without a sender of its own leaves as {sender}", "")


def _limit_check(host):
    status = daily_limit.limit_status(host)
    count, limit = status["count"], status["limit"]
    finding = (f"{count} of {limit} emails sent today through the default server; the count resets "
               f"at {status['resets_at']:%Y-%m-%d %H:%M} UTC")
    if limit and count >= limit:
        return Check("mail.daily_limit", "fail", "daily limit reached: " + finding,
                     "wait for the reset and run postroom queue retry --all-failed, raise daily_limit, "
                     "or add your own server (postroom server add)")
    if limit and count >= 0.8 * limit:
        return Check("mail.daily_limit", "warn", "over 80% of the daily limit used: " + finding,
                     "raise daily_limit or add your own server (postroom server add)")
    return Check("mail.daily_limit", "ok", finding, "")


def _failure_check(host):
    since = host.clock.now() - dt.timedelta(hours=24)
    rows = (OutgoingMail.select(OutgoingMail.failure_type, pw.fn.COUNT(OutgoingMail.id))
            .where((OutgoingMail.state == "exception") & (OutgoingMail.updated_at >= since))
            .group_by(OutgoingMail.failure_type).tuples())
    counts = collections.Counter({ftype or "unknown": n for ftype, n in rows})
    cert = (OutgoingMail.select(OutgoingMail.failure_reason)
            .where((OutgoingMail.state == "exception") & (OutgoingMail.updated_at >= since)
                   & OutgoingMail.failure_reason.contains("certificate failed verification")).limit(1).scalar())
    if cert:
        return Check("mail.failures", "fail", f"mail fails because of a server's TLS certificate: {cert}",
                     "fix the server's certificate (or smtp_ca_file), then postroom queue retry --all-failed")
    if not counts:
        return Check("mail.failures", "ok", "no mail failed in the last 24 hours", "")
    detail = ", ".join(f"{n} {t}" for t, n in counts.most_common())
    return Check("mail.failures", "warn", f"{sum(counts.values())} mail(s) failed in the last 24 hours: {detail}",
                 "postroom queue list --state exception; fix the cause, then postroom queue retry ID...")


def _interval_check(host):
    action = CronAction.get_or_none(CronAction.code == ACTION_CODE)
    if action is None:
        return Check("mail.queue_interval", "fail", f"{ACTION_NAME!r} does not exist",
                     "postroom plugins enable mail_queue")
    if not action.active:
        return Check("mail.queue_interval", "fail", f"{ACTION_NAME!r} is inactive: bulk mail is not sent",
                     f"postroom cron enable {ACTION_NAME!r}")
    if action.failure_count:
        return Check("mail.queue_interval", "fail",
                     f"{ACTION_NAME!r} failed its last {action.failure_count} run(s) (since "
                     f"{action.first_failure_at:%Y-%m-%d %H:%M} UTC): bulk mail is not leaving; last error: "
                     f"{(action.last_error or '').splitlines()[0][:300] if action.last_error else 'unknown'}",
                     "read the error in postroom.log, fix its cause, then postroom cron run "
                     f"{ACTION_NAME!r}")
    minutes = dt.timedelta(**{action.interval_type: action.interval_number}).total_seconds() / 60
    now = host.clock.now()
    late = now - action.nextcall
    if late > dt.timedelta(minutes=10) and not (action.lease_until and action.lease_until > now):
        return Check("mail.queue_interval", "warn",
                     f"{ACTION_NAME!r} is {int(late.total_seconds() // 60)} minutes late (next call was "
                     f"{action.nextcall:%Y-%m-%d %H:%M} UTC): is `postroom serve` running?",
                     "start postroom serve (make run)")
    if minutes < 15 or minutes > 60:
        return Check("mail.queue_interval", "warn",
                     f"{ACTION_NAME!r} runs every {minutes:g} minutes (15 to 60 is recommended)",
                     f"postroom cron set-interval {ACTION_NAME!r} 15m")
    return Check("mail.queue_interval", "ok",
                 f"{ACTION_NAME!r} runs every {minutes:g} minutes and is on time", "")
