"""RCPT-time verdicts over a real socket, with their exact enhanced status codes."""
import asyncio
import os
import smtplib

import aiosmtplib
import pytest

from postroom.core.plugins import PluginInfo, hookimpl
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision

from .conftest import message, smtp, transaction


@pytest.fixture
def host(inbound_host):
    h = inbound_host()
    aliases.add_alias(h, "support", "generic")
    return h


def rcpt(service, address, mail_from="ann@client.test"):
    with smtp(service) as client:
        client.mail(mail_from)
        code, text = client.rcpt(address)
        return code, text.decode()


@pytest.mark.parametrize("address", [
    "support@example.com", "SUPPORT@Example.COM", "bounce@example.com", "bounce+n12-abc@example.com",
    "catchall@example.com", "postmaster@example.com", "postmaster", "Postmaster@EXAMPLE.com"])
def test_valid_recipients_are_accepted_at_rcpt(host, gateway, address):
    service = gateway(host)
    assert rcpt(service, address) == (250, "2.1.5 Ok")


def test_unknown_local_part_is_refused_with_550_5_1_1_mailbox_unavailable(host, gateway):
    service = gateway(host)
    assert rcpt(service, "nobody@example.com") == (
        550, "5.1.1 <nobody@example.com>: Recipient address rejected: mailbox unavailable")


def test_other_domain_is_refused_as_relaying_with_550_5_7_1(host, gateway):
    code, text = rcpt(gateway(host), "someone@elsewhere.org")
    assert code == 550 and text.startswith("5.7.1 relaying denied")


def test_refused_recipient_is_written_to_the_decision_log(host, gateway, cli_run):
    rcpt(gateway(host), "nobody@example.com", mail_from="spam@bad.test")
    result = cli_run(host, "inbound", "log", "--sender", "spam@bad.test", "--json")
    assert '"verdict": "refused"' in result.output and "nobody@example.com" in result.output


def test_recipient_limit_per_transaction_answers_452_4_5_3(inbound_host, gateway):
    host = inbound_host(inbound_max_recipients=2)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    with smtp(service) as client:
        client.mail("ann@client.test")
        assert client.rcpt("support@example.com")[0] == 250
        assert client.rcpt("catchall@example.com")[0] == 250
        code, text = client.rcpt("postmaster@example.com")
    assert (code, text.decode()) == (452, "4.5.3 Too many recipients")


def test_database_unreachable_answers_451_4_3_0_and_recovers(inbound_host, gateway, tmp_path):
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    host = inbound_host(db_url=f"sqlite:///{dbdir / 'postroom.db'}")
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    os.rename(dbdir, tmp_path / "db-gone")  # the gateway's threads have no connection yet
    try:
        code, text = rcpt(service, "support@example.com")
        assert code == 451 and text.startswith("4.3.0")
    finally:
        os.rename(tmp_path / "db-gone", dbdir)
    assert rcpt(service, "support@example.com")[0] == 250


class UnsubscribeClaim:
    """A plugin claiming `unsubscribe@` through postroom_inbound_recipient."""
    PLUGIN = PluginInfo("claimer")

    def __init__(self):
        self.received = []

    @hookimpl(optionalhook=True)
    def postroom_inbound_recipient(self, host, local_part, domain):
        if local_part != "unsubscribe":
            return None

        def handle(host, envelope_from, recipient, msg):
            self.received.append((envelope_from, recipient, msg["Subject"]))
            return 250, "2.0.0 Ok: unsubscribed"
        return handle


def test_a_plugin_claims_an_address_and_handles_what_arrives(inbound_host, gateway):
    claimer = UnsubscribeClaim()
    host = inbound_host(extra=[claimer])
    host.enable_plugin("claimer")
    service = gateway(host)
    replies, data = transaction(service, "ann@client.test", ["unsubscribe@example.com"],
                                message(subject="stop", to="unsubscribe@example.com"))
    assert data == (250, b"2.0.0 Ok: unsubscribed")
    assert claimer.received == [("ann@client.test", "unsubscribe@example.com", "stop")]
    assert InboundDecision.get(InboundDecision.route == "claimed").verdict == "accepted"


def test_aiosmtplib_client_gets_the_same_verdicts(host, gateway):
    asyncio.run(_aiosmtplib_session(gateway(host).port))


async def _aiosmtplib_session(port):
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("ann@client.test")
        ok = await client.rcpt("support@example.com")
        assert (ok.code, ok.message) == (250, "2.1.5 Ok")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("nobody@example.com")
        assert refused.value.code == 550 and "5.1.1" in refused.value.message
        reply = await client.data(message(subject="via aiosmtplib"))
        assert reply.code == 250 and "created generic," in reply.message
    finally:
        await client.quit()


def test_smtplib_sendmail_reports_refused_recipients(host, gateway):
    service = gateway(host)
    with smtplib.SMTP("127.0.0.1", service.port, timeout=10) as client:
        refused = client.sendmail("ann@client.test", ["support@example.com", "nobody@example.com"],
                                  message(subject="partly"))
    assert list(refused) == ["nobody@example.com"] and refused["nobody@example.com"][0] == 550


def test_postgresql_going_away_mid_session_answers_451_and_nothing_is_half_stored(inbound_host, gateway, pg_database):
    import psycopg
    from urllib.parse import urlparse

    from postroom.core.models import Record
    host = inbound_host(db_url=pg_database)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    name = urlparse(pg_database).path.lstrip("/")
    admin_url = os.environ["POSTROOM_TEST_PG_URL"]
    with smtp(service) as client:
        client.mail("ann@client.test")
        assert client.rcpt("support@example.com")[0] == 250
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            code, text = client.data(message())
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert code == 451 and text.startswith(b"4.3.0")
        client.rset()
        client.mail("ann@client.test")
        assert client.rcpt("support@example.com")[0] == 250  # reconnected
        assert client.data(message())[0] == 250
    host.db.close()
    assert Record.select().count() == 1


ADDRESS_ARGUMENTS = ["<support@example.com>", "<support@example.com> NOTIFY=NEVER", "support@example.com",
                     "<a b@example.com>", "<support@example.com", "<>", "<\"quoted local\"@example.com>",
                     "<x@[127.0.0.1]>", "<@relay.test:support@example.com>", "<support@@example.com>"]


@pytest.mark.parametrize("arg", ADDRESS_ARGUMENTS)
def test_an_address_argument_parses_as_aiosmtpd_parses_it_every_time(host, arg):
    from aiosmtpd.smtp import SMTP
    from postroom.plugins.inbound.protocol import GatewaySMTP
    plain, ours = SMTP(None), GatewaySMTP(None)
    assert ours._getaddr(arg) == plain._getaddr(arg)
    assert ours._getaddr(arg) == plain._getaddr(arg)  # the remembered answer, the same


def test_a_malformed_recipient_is_refused_on_every_try_and_a_good_one_accepted(host, gateway):
    service = gateway(host)
    with smtp(service) as client:
        for _ in range(3):
            client.mail("ann@client.test")
            assert client.docmd("RCPT TO:<support@@example.com>")[0] == 553
            assert client.rcpt("support@example.com")[0] == 250
            client.rset()
