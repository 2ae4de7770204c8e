"""The operator's commands: aliases, route test, the decision log, export, vacuum, doctor,
and the gateway started by `postroom serve`."""
import datetime as dt
import json
import smtplib
import threading

import pytest

from postroom.core import chatter, records
from postroom.core.models import Record
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundAlias, InboundDecision, InboundOriginal
from tests.support.smtp import free_port

from .conftest import message, smtp, transaction


def test_alias_add_list_remove(inbound_host, cli_run):
    host = inbound_host()
    result = cli_run(host, "alias", "add", "Support", "--model", "generic", "--defaults", '{"team": "a"}')
    assert result.exit_code == 0 and result.output.split()[-1] == str(InboundAlias.get().id)
    listing = json.loads(cli_run(host, "alias", "list", "--json").output)
    assert listing[0]["address"] == "support@example.com" and listing[0]["defaults"] == {"team": "a"}
    assert "support@example.com" in cli_run(host, "alias", "list").output
    assert cli_run(host, "alias", "remove", "support").exit_code == 0
    assert InboundAlias.select().count() == 0


@pytest.mark.parametrize("args, message_part", [
    (["catchall", "--model", "generic"], "system address"),
    (["sales", "--model", "nope"], "unknown record type 'nope'"),
    (["sales", "--model", "generic", "--record", "99"], "no generic record with id 99"),
    (["sales", "--model", "generic", "--contact", "followers"], "--contact followers needs --record"),
    (["sales", "--model", "generic", "--defaults", "{bad"], "--defaults is not valid JSON"),
    (["sales@other.org", "--model", "generic"], "not one of this deployment's domains"),
    (["bad alias", "--model", "generic"], "not a usable local part"),
])
def test_alias_add_refuses_bad_input_with_one_line(inbound_host, cli_run, args, message_part):
    host = inbound_host()
    result = cli_run(host, "alias", "add", *args)
    assert result.exit_code != 0 and message_part in result.output
    assert "Traceback" not in result.output and InboundAlias.select().count() == 0


def test_alias_add_twice_and_remove_unknown_are_refused(inbound_host, cli_run):
    host = inbound_host()
    cli_run(host, "alias", "add", "sales", "--model", "generic")
    assert "already exists" in cli_run(host, "alias", "add", "sales", "--model", "generic").output
    result = cli_run(host, "alias", "remove", "nobody")
    assert result.exit_code == 3 and "no alias nobody" in result.output


def test_route_test_says_what_would_happen_without_storing_anything(inbound_host, cli_run):
    host = inbound_host()
    aliases.add_alias(host, "support", "generic")
    aliases.add_alias(host, "staff", "generic", contact="partners")
    record = records.create_record(host, "generic", "Website")
    sent = chatter.post_message(host, record, "Draft", subject="Website")
    out = cli_run(host, "route", "test", "support@example.com", "--from", "ann@client.test", "--subject", "Hi").output
    assert "route: alias" in out and "would create a generic record named 'Hi'" in out
    out = cli_run(host, "route", "test", "catchall@example.com", "--in-reply-to", sent.message_id).output
    assert f"posted on generic,{record.id} as a reply" in out
    out = cli_run(host, "route", "test", "catchall@example.com").output
    assert "DATA: 550 5.1.1" in out
    assert "RCPT: 550 5.1.1" in cli_run(host, "route", "test", "nobody@example.com").output
    assert "550 5.7.1 relaying denied" in cli_run(host, "route", "test", "a@else.org").output
    out = cli_run(host, "route", "test", "staff@example.com", "--from", "eve@evil.test").output
    assert "DATA: 550 5.7.1 <staff@example.com>: eve@evil.test is not a known contact" in out
    data = json.loads(cli_run(host, "route", "test", "bounce@example.com", "--json").output)
    assert data["route"] == "bounce"
    assert Record.select().count() == 1 and InboundDecision.select().count() == 0


def test_inbound_log_answers_why_a_mail_was_not_received(inbound_host, gateway, cli_run):
    host = inbound_host()
    aliases.add_alias(host, "staff", "generic", contact="partners")
    service = gateway(host)
    transaction(service, "eve@evil.test", ["staff@example.com"], message(sender="eve@evil.test"))
    transaction(service, "ann@client.test", ["nobody@example.com"], message())
    rows = json.loads(cli_run(host, "inbound", "log", "--sender", "eve@evil.test", "--json").output)
    assert len(rows) == 1
    row = rows[0]
    assert (row["verdict"], row["code"], row["recipients"], row["message_id"]) == (
        "refused", 550, "staff@example.com", "<m1@client.test>")
    assert "only known partners may write to staff" in row["reason"] and row["peer"].startswith("127.0.0.1:")
    table = cli_run(host, "inbound", "log").output
    assert "nobody@example.com" in table and "eve@evil.test" in table


def test_inbound_log_labels_postfix_verification_probes(inbound_host, gateway, cli_run):
    host = inbound_host()
    service = gateway(host)
    with smtp(service) as client:  # what reject_unverified_recipient sends: no DATA
        client.mail("double-bounce@mx.example.com")
        assert client.rcpt("nobody@example.com")[0] == 550
        client.rset()
    transaction(service, "ann@client.test", ["nobody@example.com"], message())
    rows = json.loads(cli_run(host, "inbound", "log", "--json").output)
    assert [(r["verdict"], r["sender"]) for r in rows] == [
        ("probe-refused", "double-bounce@mx.example.com"), ("refused", "ann@client.test")]
    assert "probe-refused" in cli_run(host, "inbound", "log").output
    log = (host.config.path_of("log_dir") + "/postroom.log")
    assert "inbound probe-refused refused: peer=" in open(log).read()


def test_export_of_a_refused_or_unknown_entry_says_why(inbound_host, gateway, cli_run):
    host = inbound_host()
    transaction(gateway(host), "ann@client.test", ["nobody@example.com"], message())
    result = cli_run(host, "inbound", "export", InboundDecision.get().id)
    assert result.exit_code == 3 and "only accepted mail keeps its original" in result.output
    assert "no inbound log entry 999" in cli_run(host, "inbound", "export", "999").output


def test_vacuum_removes_old_originals_and_decisions_in_bounded_chunks(inbound_host, gateway, clock, db_url):
    host = inbound_host(db_url=db_url)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    for i in range(3):
        transaction(service, "ann@client.test", ["support@example.com"], message(message_id=f"<v{i}@c.test>"))
    clock.advance(days=31)
    transaction(service, "ann@client.test", ["support@example.com"], message(message_id="<fresh@c.test>"))
    dry = host.hook.postroom_vacuum(host=host, batch_size=2, dry_run=True)
    inbound = [r for r in dry if r and "inbound originals" in r["removed"]][0]
    assert inbound == {"removed": {"inbound originals": 3, "inbound decisions": 0}, "remaining": 0}
    assert InboundOriginal.select().count() == 4
    from postroom.plugins.inbound import postroom_vacuum
    first = postroom_vacuum(host=host, batch_size=2, dry_run=False)
    assert first == {"removed": {"inbound originals": 2, "inbound decisions": 0}, "remaining": 1}
    second = postroom_vacuum(host=host, batch_size=2, dry_run=False)
    assert second == {"removed": {"inbound originals": 1, "inbound decisions": 0}, "remaining": 0}
    assert [o.message_id for o in InboundOriginal.select()] == ["<fresh@c.test>"]
    clock.advance(days=60)
    third = postroom_vacuum(host=host, batch_size=10, dry_run=False)
    assert third["removed"]["inbound decisions"] == 3 and InboundDecision.select().count() == 1


def test_doctor_checks_find_the_gateway_answering_or_not(inbound_host, gateway):
    from postroom.plugins.inbound.doctor import checks
    port = free_port()
    host = inbound_host(inbound_port=port)
    down = {c.name: c for c in checks(host)}
    assert down["inbound gateway"].status == "fail" and "start `postroom serve`" in down["inbound gateway"].remedy
    assert down["inbound domains"].status == "ok" and "example.com" in down["inbound domains"].finding
    from postroom.plugins.inbound.gateway import GatewayService
    with GatewayService(host, "127.0.0.1", port):
        up = {c.name: c for c in checks(host)}
    assert up["inbound gateway"].status == "ok" and "220 example.com" in up["inbound gateway"].finding


def test_postroom_serve_runs_the_gateway_on_the_configured_address(inbound_host):
    from postroom.core.serve import serve
    port = free_port()
    host = inbound_host(inbound_port=port, inbound_host="127.0.0.1", serve_poll_seconds="0.05")
    aliases.add_alias(host, "support", "generic")
    stop = threading.Event()
    worker = threading.Thread(target=serve, args=(host, stop, False, "inbound"))
    worker.start()
    try:
        for _ in range(100):
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except OSError:
                stop.wait(0.05)
        with client:
            assert client.sendmail("ann@client.test", ["support@example.com"], message()) == {}
    finally:
        stop.set()
        worker.join(10)
    assert Record.select().count() == 1
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)


def test_database_work_runs_on_the_pool_never_on_the_event_loop(inbound_host, gateway):
    from postroom.core.plugins import PluginInfo, hookimpl

    seen = []

    class Spy:
        PLUGIN = PluginInfo("spy")

        @hookimpl(optionalhook=True)
        def postroom_inbound_recipient(self, host, local_part, domain):
            seen.append(threading.current_thread().name)

        @hookimpl
        def postroom_record_created(self, host, record, values):
            seen.append(threading.current_thread().name)
    host = inbound_host(extra=[Spy()])
    host.enable_plugin("spy")
    aliases.add_alias(host, "support", "generic")
    transaction(gateway(host), "ann@client.test", ["support@example.com", "x@example.com"], message())
    assert seen and all(name.startswith("inbound-db") for name in seen)


def test_decision_times_come_from_the_host_clock(inbound_host, gateway, clock):
    host = inbound_host()
    transaction(gateway(host), "ann@client.test", ["nobody@example.com"], message())
    assert InboundDecision.get().created_at == clock.now()
    assert clock.now() == dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc)


def test_inbound_log_lists_the_latest_decisions_newest_last_like_every_listing(inbound_host, gateway, cli_run):
    host = inbound_host()
    service = gateway(host)
    for i in range(3):
        transaction(service, f"c{i}@client.test", ["nobody@example.com"], message())
    rows = json.loads(cli_run(host, "inbound", "log", "--limit", "2", "--json").output)
    assert [r["sender"] for r in rows] == ["c1@client.test", "c2@client.test"]
    table = cli_run(host, "inbound", "log").output.splitlines()
    assert "c0@client.test" in table[1] and "c2@client.test" in table[-1]
