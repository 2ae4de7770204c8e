"""End to end with every builtin plugin enabled: real mail over loopback, then vacuum and doctor."""
import datetime as dt
import json

from postroom.core import chatter, records
from postroom.core.models import Message, Notification
from postroom.core.plugins import discover
from tests.doctor.conftest import GOOD
from tests.support.dns import DnsServer
from tests.support.smtp import SMTPSink, free_port

from .seed import NOTIFICATIONS, expected_gone, seed_core


def test_every_builtin_plugin_vacuums_and_reports_through_the_real_cli(make_host, cli_run, clock):
    builtins = sorted(discover())
    with SMTPSink() as sink, DnsServer(GOOD) as dns:
        host = make_host(plugins=builtins, config={
            "smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "3",
            "dns_resolver": dns.address, "dns_timeout": "2", "inbound_port": free_port()})
        records.ensure_admin(host, "admin@example.com")
        rec = records.create_record(host, "generic", "Website redesign")
        records.follow(host, rec, records.create_partner(host, "Ann", "ann@example.org"))
        posted = chatter.post_message(host, rec, "Kick-off tomorrow", subject="Kick-off")
        kept = cli_run(host, "mail", "send", "--to", "kept@example.org", "--subject", "Invoice",
                       "--body", "attached")
        later = (clock.now() + dt.timedelta(days=400)).isoformat()
        scheduled = cli_run(host, "mail", "send", "--to", "later@example.org", "--subject", "Reminder",
                            "--body", "next year", "--at", later)
        assert kept.exit_code == 0 and scheduled.exit_code == 0, kept.output + scheduled.output
        sink.wait_for(2)
        clock.advance(days=200)
        ids = seed_core(host)

        dry = json.loads(cli_run(host, "vacuum", "--dry-run", "--json").output)
        result = cli_run(host, "vacuum", "--json")
        report = json.loads(result.output)
        doctor = cli_run(host, "doctor", "--json")

    assert result.exit_code == 0, result.output
    by_plugin = {e["plugin"]: e for e in report["plugins"]}
    assert {"mail_queue", "mail_marketing", "inbound", "core"} <= set(by_plugin)
    assert [e["plugin"] for e in report["plugins"]][-1] == "core"
    assert all(e["error"] is None for e in report["plugins"])
    assert all(e["error"] is None for e in dry["plugins"])
    assert dry["removed"] == report["removed"]
    assert by_plugin["mail_queue"]["removed"]["mails"] == 1  # the kept, sent invoice
    # The chatter stays; the delivered notifications of 200 days ago go; failures stay.
    assert Message.get_or_none(Message.id == posted.id) is not None
    assert Notification.select().where(Notification.message == posted.id).count() == 0
    present = {n.id for n in Notification.select(Notification.id)}
    assert {label for label in NOTIFICATIONS if ids[label] in present} == set(NOTIFICATIONS) - expected_gone(NOTIFICATIONS)
    queue = json.loads(cli_run(host, "queue", "list", "--json").output)
    assert [m["email_to"] for m in queue] == ["later@example.org"]  # scheduled for later: never vacuumed

    checks = json.loads(doctor.output)["checks"]
    assert {"core", "mail_queue", "mail_marketing", "inbound", "auto_vacuum"} <= {c["source"] for c in checks}
    assert not [c for c in checks if c["name"].endswith(".checks")], "a plugin's checks raised"
    assert {c["name"]: c["status"] for c in checks if c["source"] == "core"}["dns.spf"] == "ok"
    assert next(c for c in checks if c["name"] == "vacuum.last_run")["status"] == "ok"
