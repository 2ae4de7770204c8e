"""The core's doctor checks: the admin address, the scheduler, failures and bounces, logs.

Failures and bounces are computed from core `Notification` rows (status `exception` /
`bounce`, `updated_at`), so they answer whatever plugin does the sending. The DNS checks
(SPF, DKIM, DMARC) live in `core.dns_checks`.
"""
import datetime as dt
import os

import peewee as pw

from . import records, services
from .doctor import Check
from .errors import first_line
from .models import CronAction, Notification

OVERDUE = dt.timedelta(hours=1)


def check_admin_email(host) -> Check:
    admin = records.admin_partner(host)
    if admin is None:
        return Check("admin_email", "warn", "there is no admin partner yet", "run: postroom init")
    if records.admin_has_temporary_email(host):
        return Check("admin_email", "fail",
                     f"the admin partner still has the temporary address {admin.email}; mail from or "
                     f"to it fails", "set a real one: postroom admin set-email ADDRESS")
    return Check("admin_email", "ok", f"the admin partner's address is {admin.email}")


def check_actions(host) -> list[Check]:
    """One check per action that is deactivated, failing or overdue; one `ok` otherwise."""
    now = host.clock.now()
    checks = []
    query = (CronAction.select().where(CronAction.code.in_(list(host.action_specs) or [""]))
             .order_by(CronAction.priority, CronAction.name))
    for a in query:
        quoted = f"'{a.name}'"
        last_error = first_line(a.last_error or "")
        error = f"; last error: {last_error}" if last_error else ""
        if not a.active and a.failure_count:
            checks.append(Check(f"cron:{a.name}", "fail",
                                f"{quoted} was deactivated after failing {a.failure_count} times in a row{error}",
                                f"fix the cause (grep \"cron {quoted}\" postroom.log), then: "
                                f"postroom cron enable {quoted}"))
        elif not a.active:
            checks.append(Check(f"cron:{a.name}", "warn", f"{quoted} is disabled: it never runs",
                                f"if that was not intended: postroom cron enable {quoted}"))
        elif a.failure_count:
            checks.append(Check(f"cron:{a.name}", "warn",
                                f"{quoted} failed {a.failure_count} time(s) in a row{error}",
                                f"see grep \"cron {quoted}\" postroom.log; it is deactivated after "
                                f"5 failures over a week"))
        elif a.nextcall < now - OVERDUE and (a.last_run_at is None or a.last_run_at < a.nextcall):
            # (a run continued by triggers keeps its old next call: it did run)
            checks.append(Check(f"cron:{a.name}", "warn",
                                f"{quoted} was due at {a.nextcall:%Y-%m-%d %H:%M} UTC and has not run",
                                "make sure `postroom serve` is running"))
    if not checks:
        checks.append(Check("cron", "ok", f"{query.count()} scheduled action(s) active, none failing "
                                          f"or overdue"))
    return checks


def check_failures(host) -> Check:
    """Failed notifications of the last 24 hours, by failure type. Which types mean the
    deployment cannot send is the mail service's knowledge (`deployment_failures`), not
    the core's: without a mail service every failure reads as recipient-side."""
    since = host.clock.now() - dt.timedelta(hours=24)
    kind = pw.fn.COALESCE(Notification.failure_type, Notification.status)
    rows = (Notification.select(kind.alias("kind"), pw.fn.COUNT(Notification.id),
                                pw.fn.MAX(Notification.message))
            .where(Notification.status.in_(("exception", "bounce")) & (Notification.updated_at >= since))
            .group_by(kind).order_by(pw.fn.COUNT(Notification.id).desc(), kind).tuples())
    rows = list(rows)
    if not rows:
        return Check("failures_24h", "ok", "no failed mail in the last 24 hours")
    total = sum(n for _, n, _ in rows)
    latest = max(mid for _, _, mid in rows)
    finding = f"{total} failed in the last 24 hours: " + ", ".join(f"{k} {n}" for k, n, _ in rows)
    mail = host.services.get(services.MAIL)
    remedies = getattr(mail, "deployment_failures", None) or {}
    worst = next((k for k, _, _ in rows if k in remedies), None)
    if worst is not None:
        return Check("failures_24h", "fail", finding, remedies[worst].format(mid=latest))
    return Check("failures_24h", "warn", finding,
                 f"recipient-side failures: `postroom message show {latest}` shows each reason; "
                 f"correct the addresses and resend")


def check_bounce_rate(host) -> Check:
    """Bounced / (sent + bounced) email notifications over the last 7 days."""
    since = host.clock.now() - dt.timedelta(days=7)
    bounced = pw.fn.SUM(pw.Case(None, [(Notification.status == "bounce", 1)], 0))
    sent, bounces = (Notification.select(pw.fn.COUNT(Notification.id), bounced)
                     .where((Notification.notification_type == "email")
                            & Notification.status.in_(("sent", "bounce"))
                            & (Notification.updated_at >= since)).tuples().first())
    bounces = int(bounces or 0)
    if not sent:
        return Check("bounce_rate_7d", "ok", "no email sent in the last 7 days")
    rate = 100.0 * bounces / sent
    warn_at = host.config.getfloat("doctor_bounce_warn_percent", 2.0)
    fail_at = host.config.getfloat("doctor_bounce_fail_percent", 5.0)
    finding = f"bounce rate {rate:.1f}% over the last 7 days ({bounces} of {sent} mails)"
    remedy = ("remove or correct bouncing addresses (postroom partner list shows bounce counters); "
              "providers block senders whose bounce rate stays high")
    if rate >= fail_at:
        return Check("bounce_rate_7d", "fail", finding + f", at or above {fail_at:g}%", remedy)
    if rate >= warn_at:
        return Check("bounce_rate_7d", "warn", finding + f", at or above {warn_at:g}%", remedy)
    return Check("bounce_rate_7d", "ok", finding)


def check_logs(host) -> Check:
    directory = host.config.path_of("log_dir")
    path = os.path.join(directory, "postroom.log")
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        state = "is not writable" if os.path.isdir(directory) else "does not exist"
        return Check("logs", "fail", f"the log folder {directory} {state}: nothing is being logged",
                     "create it (writable by the postroom user) or set log_dir in the config")
    return Check("logs", "ok", f"today's log is {path}; yesterday's postroom.log.1, older ones "
                               f"postroom.log.DATE.gz", f"grep / zgrep {directory} for a mail's id")


def check_config(host) -> list[Check]:
    """Unknown keys in the config file (typos like `smtp_prot`), each with the closest key."""
    where = host.config.path or "the configuration"
    found = [Check("config", "warn", f"unknown config key {name!r} in {where} is ignored",
                   f"did you mean {close!r}? (postroom config check lists every key)" if close
                   else "remove it (postroom config check lists every key)")
             for name, close in host.config.unknown()]
    return found  # nothing to say when every key is known


def check_http_exposure(host) -> Check:
    """The console carries operator logins: beyond loopback it needs TLS in front."""
    from .http_service import is_loopback
    from .web import settings
    conf = settings(host)
    where = f"{conf['host']}:{conf['port']}"
    if is_loopback(conf["host"]):
        return Check("http.exposure", "ok", f"the HTTP service and console listen on {where} (loopback only)")
    if conf["public_url"].startswith("https://") and host.config.get("public_url"):
        return Check("http.exposure", "ok", f"the HTTP service listens on {where} behind {conf['public_url']}")
    return Check("http.exposure", "warn",
                 f"the HTTP service (and the console's logins) listens on {where}, beyond loopback, "
                 f"and public_url {conf['public_url']!r} is not https: passwords and sessions may cross "
                 f"the network in clear",
                 "put a TLS-terminating proxy in front and set public_url = https://..., or set "
                 "http_host = 127.0.0.1")


def core_checks(host) -> list[Check]:
    """The core's `postroom_doctor_checks`, in troubleshooting order."""
    from .dns_checks import check_dns
    return ([check_admin_email(host)] + check_config(host) + check_dns(host) + [check_failures(host), check_bounce_rate(host)]
            + check_actions(host) + [check_logs(host), check_http_exposure(host)])
