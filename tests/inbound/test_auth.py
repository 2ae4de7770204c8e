"""Sender authentication of inbound mail: SPF, DKIM and DMARC from a DNS server on loopback
(tests/support/dns.py), recorded in the decision log and on the kept original, required by
aliases that trust the sender (a spoofed partner no longer passes)."""
import json
import socket
import threading
import time

import dkim
import pytest

from postroom.core import records
from postroom.core.models import Record
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundDecision, InboundOriginal
from postroom.plugins.mail_queue.dkim_keys import _new_pair
from tests.support.dns import DnsServer

from .conftest import message, transaction

PARTNER = "partner.example.net"


@pytest.fixture(scope="module")
def key():
    """(private key PEM, public key as DNS publishes it), as `postroom dkim` makes them."""
    return _new_pair("rsa-2048")


@pytest.fixture
def dns_world(key):
    """partner.example.net: SPF allows 127.0.0.1 only, DKIM key s1, DMARC p=reject."""
    with DnsServer({PARTNER: ["v=spf1 ip4:127.0.0.1 -all"],
                    f"s1._domainkey.{PARTNER}": [f"v=DKIM1; k=rsa; p={key[1]}"],
                    f"_dmarc.{PARTNER}": ["v=DMARC1; p=reject"]}) as server:
        yield server


@pytest.fixture
def board(inbound_host, dns_world):
    """A `--contact partners` alias; ceo@partner.example.net is a known partner."""
    def build(**config):
        host = inbound_host(dns_resolver=dns_world.address, dns_timeout="2", **config)
        record = records.create_record(host, "generic", "Board")
        records.create_partner(host, "CEO", f"ceo@{PARTNER}")
        aliases.add_alias(host, "board", "generic", record_id=record.id, contact="partners")
        return host
    return build


def signed(key, **kw) -> bytes:
    data = message(sender=f"CEO <ceo@{PARTNER}>", to="board@example.com", **kw)
    return dkim.sign(data, b"s1", PARTNER.encode(), key[0], include_headers=[b"from", b"subject"]) + data


def test_a_spoofed_partner_is_refused_by_a_partners_alias_when_its_domain_publishes_dmarc_reject(
        board, gateway, key):
    host = board()
    service = gateway(host)
    # The attacker's own envelope domain and no signature: DMARC fails for partner.example.net.
    spoof = message(sender=f"CEO <ceo@{PARTNER}>", to="board@example.com", subject="Wire the money",
                    message_id="<spoof@evil.test>")
    code, text = transaction(service, "mallory@evil.example", ["board@example.com"], spoof)[1]
    assert code == 550 and b"sender authentication failed" in text and b"dmarc=fail" in text
    assert Record.get().messages.count() == 0
    row = InboundDecision.get(InboundDecision.message_id == "<spoof@evil.test>")
    assert "dmarc=fail (p=reject) header.from=ceo@partner.example.net" in row.auth


def test_a_dkim_signed_mail_of_the_partner_passes_and_the_result_is_kept_on_the_original(
        board, gateway, key, cli_run):
    host = board()
    data = signed(key, subject="Agenda", message_id="<agenda@partner.example.net>")
    # Envelope from another domain (a mailing service): DKIM alone aligns.
    code, _ = transaction(gateway(host), "bounces@mailer.example.org", ["board@example.com"], data)[1]
    assert code == 250
    original = bytes(InboundOriginal.get().content)
    first = original.split(b"\r\n", 1)[0].decode()
    assert first.startswith("Authentication-Results: example.com; spf=")
    assert "dkim=pass header.d=partner.example.net" in first and "dmarc=pass" in first
    rows = json.loads(cli_run(host, "inbound", "log", "--json").output)
    assert "dmarc=pass" in rows[-1]["auth"]


def test_spf_from_the_right_address_passes_dmarc_without_a_signature(board, gateway):
    host = board()
    data = message(sender=f"CEO <ceo@{PARTNER}>", to="board@example.com", message_id="<spf@partner.example.net>")
    code, _ = transaction(gateway(host), f"ceo@{PARTNER}", ["board@example.com"], data)[1]
    assert code == 250
    assert "spf=pass" in InboundDecision.get(InboundDecision.code == 250).auth


def test_require_auth_none_lets_the_operator_switch_the_check_off(board, gateway, cli_run):
    host = board()
    record = Record.get()
    result = cli_run(host, "alias", "add", "open", "--model", "generic", "--record", record.id,
                     "--contact", "partners", "--require-auth", "none")
    assert result.exit_code == 0, result.output
    spoof = message(sender=f"CEO <ceo@{PARTNER}>", to="open@example.com", message_id="<s2@evil.test>")
    assert transaction(gateway(host), "mallory@evil.example", ["open@example.com"], spoof)[1][0] == 250
    assert "dmarc=fail" in InboundDecision.get(InboundDecision.code == 250).auth


def test_require_auth_dmarc_refuses_a_domain_without_dmarc_on_an_everyone_alias(inbound_host, gateway,
                                                                                 dns_world, cli_run):
    host = inbound_host(dns_resolver=dns_world.address, dns_timeout="2")
    assert cli_run(host, "alias", "add", "strict", "--model", "generic",
                   "--require-auth", "dmarc").exit_code == 0
    data = message(sender="ann@nodmarc.example.net", to="strict@example.com")
    code, text = transaction(gateway(host), "ann@nodmarc.example.net", ["strict@example.com"], data)[1]
    assert code == 550 and b"requires a DMARC pass" in text
    assert cli_run(host, "alias", "add", "x", "--model", "generic", "--require-auth", "maybe").exit_code != 0


def test_a_dns_timeout_is_a_temporary_failure_never_a_pass(inbound_host, gateway):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # takes the queries and never answers
    try:
        host = inbound_host(dns_resolver=f"127.0.0.1:{silent.getsockname()[1]}", dns_timeout="0.5")
        record = records.create_record(host, "generic", "Board")
        records.create_partner(host, "CEO", f"ceo@{PARTNER}")
        aliases.add_alias(host, "board", "generic", record_id=record.id, contact="partners")
        data = message(sender=f"CEO <ceo@{PARTNER}>", to="board@example.com")
        code, text = transaction(gateway(host), f"ceo@{PARTNER}", ["board@example.com"], data)[1]
    finally:
        silent.close()
    assert code == 451 and b"4.7.5" in text and b"DNS timeout" in text
    assert Record.get().messages.count() == 0


def test_a_sender_check_waiting_on_dns_holds_up_no_other_message(inbound_host, gateway):
    """The writer parses and stores the messages; one whose sender check asks DNS waits for
    it on a pool thread, and a message needing no lookup is answered meanwhile."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # takes the queries and never answers
    try:
        host = inbound_host(dns_resolver=f"127.0.0.1:{silent.getsockname()[1]}", dns_timeout="1")
        aliases.add_alias(host, "support", "generic")
        service = gateway(host)
        answered = {}

        def send(name, mail_from, sender):
            data = message(sender=sender, message_id=f"<{name}@client.test>")
            answered[name] = (transaction(service, mail_from, ["support@example.com"], data)[1][0],
                              time.monotonic())
        slow = threading.Thread(target=send, args=("slow", f"ceo@{PARTNER}", f"CEO <ceo@{PARTNER}>"))
        slow.start()
        time.sleep(0.3)  # its DNS queries are out
        started = time.monotonic()
        send("quick", "postmaster@client.test", "Postmaster <postmaster@client.test>")  # no lookup
        slow.join(30)
    finally:
        silent.close()
    assert answered["quick"][0] == 250 and answered["quick"][1] - started < 0.5
    assert answered["quick"][1] < answered["slow"][1]
