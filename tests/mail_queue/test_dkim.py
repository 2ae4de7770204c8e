"""DKIM: `postroom dkim …` makes a key and prints its record; mail from a domain with a key
leaves signed, and dkimpy's own `verify` accepts the signature when it looks the printed
record up in a real DNS server on loopback."""
import json
import os
import stat

import dkim
import dns.resolver
import pytest

from tests.support.dns import DnsServer
from tests.support.smtp import SMTPSink


@pytest.fixture
def sink():
    with SMTPSink() as server:
        yield server


@pytest.fixture
def dns_server():
    with DnsServer({}) as server:
        yield server


@pytest.fixture
def signing_host(make_host, sink):
    def factory(plugins=("mail_queue",), **config):
        values = {"smtp_host": sink.host, "smtp_port": sink.port, "smtp_timeout": "5",
                  "daily_limit": "1000000", "mail_from": "news@example.com"}
        values.update(config)
        return make_host(plugins=list(plugins), config=values)
    return factory


def publish(run_cli, host, dns_server, domain):
    """Publish what `dkim show --json` prints, the way an operator pastes it into DNS."""
    shown = json.loads(run_cli(host, "dkim", "show", domain, "--json").output)
    dns_server.records[shown["record_name"]] = [shown["record_value"]]
    return shown


def dnsfunc_for(server):
    """dkimpy's DNS hook, asking the loopback server (as a receiver asks the world's DNS)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port

    def txt(name, timeout=5):
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)
    return txt


def signature_of(received) -> dict:
    header = received.message["DKIM-Signature"]
    assert header is not None, "the mail arrived unsigned"
    value = "".join(str(header).split())
    return dict(part.split("=", 1) for part in value.split(";") if part)


def gen(cli_run, host, *args):
    result = cli_run(host, "dkim", "generate", *args)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("algorithm", ["rsa-2048", "ed25519"])
def test_a_plain_mail_is_signed_and_verifies_against_the_printed_record(
        signing_host, cli_run, sink, dns_server, algorithm):
    host = signing_host()
    gen(cli_run, host, "example.com", "--algorithm", algorithm)
    publish(cli_run, host, dns_server, "example.com")

    result = cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "Invoice 12",
                     "--body", "Your invoice is attached.")
    assert result.exit_code == 0, result.output
    received = sink.wait_for(1)[0]

    sig = signature_of(received)
    assert sig["d"] == "example.com" and sig["s"] == "postroom" and sig["c"] == "relaxed/relaxed"
    assert sig["a"] == {"rsa-2048": "rsa-sha256", "ed25519": "ed25519-sha256"}[algorithm]
    signed = sig["h"].lower().split(":")
    assert {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"} <= set(signed)
    assert signed.count("from") == 2  # over-signed: a second From would break it
    assert dkim.verify(received.data, dnsfunc=dnsfunc_for(dns_server))


def test_the_printed_record_is_the_one_show_gives_and_the_key_file_is_private(
        signing_host, cli_run, tmp_path):
    host = signing_host()
    printed = gen(cli_run, host, "example.com", "--selector", "mail2026").output
    shown = json.loads(cli_run(host, "dkim", "show", "example.com", "--json").output)

    assert shown["record_name"] == "mail2026._domainkey.example.com"
    assert shown["record_value"].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert f"name:  {shown['record_name']}" in printed and f"value: {shown['record_value']}" in printed
    key_file = tmp_path / "data" / "dkim" / "example.com.mail2026.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    listed = json.loads(cli_run(host, "dkim", "list", "--json").output)
    assert [(k["domain"], k["selector"], k["algorithm"]) for k in listed] == [
        ("example.com", "mail2026", "rsa-2048")]


def test_mail_from_a_subdomain_is_signed_with_the_parent_domains_key(
        signing_host, cli_run, sink, dns_server):
    host = signing_host(mail_from="Billing <billing@eu.mail.example.com>")
    gen(cli_run, host, "example.com", "--algorithm", "ed25519")
    publish(cli_run, host, dns_server, "example.com")

    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")
    received = sink.wait_for(1)[0]

    assert signature_of(received)["d"] == "example.com"
    assert dkim.verify(received.data, dnsfunc=dnsfunc_for(dns_server))


def test_mail_from_a_domain_without_a_key_leaves_unsigned(signing_host, cli_run, sink):
    host = signing_host()
    gen(cli_run, host, "example.net")

    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")

    assert sink.wait_for(1)[0].message["DKIM-Signature"] is None


def test_non_ascii_headers_are_signed_and_verify(signing_host, cli_run, sink, dns_server):
    host = signing_host()
    gen(cli_run, host, "example.com")
    publish(cli_run, host, dns_server, "example.com")

    result = cli_run(host, "mail", "send", "--to", "ana@example.org",
                     "--from", "Ștefan Țăranu <stefan@example.com>",
                     "--subject", "Ofertă de primăvară: reducere 20% — până vineri",
                     "--body", "Bună ziua, găsiți oferta în atașament.")
    assert result.exit_code == 0, result.output
    received = sink.wait_for(1)[0]

    assert received.message["Subject"] == "Ofertă de primăvară: reducere 20% — până vineri"
    assert str(received.message["From"]) == "Ștefan Țăranu <stefan@example.com>"
    assert dkim.verify(received.data, dnsfunc=dnsfunc_for(dns_server))


def test_a_campaign_mail_with_attachments_is_signed_over_its_list_unsubscribe_headers(
        signing_host, cli_run, sink, dns_server, tmp_path):
    host = signing_host(plugins=("mail_marketing",), public_url="https://news.example.com")
    gen(cli_run, host, "example.com", "--algorithm", "ed25519")
    publish(cli_run, host, dns_server, "example.com")
    (tmp_path / "list.csv").write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
    (tmp_path / "body.html").write_text("<p>Spring <b>range</b> is out.</p>")
    for args in (("list", "create", "news"), ("list", "import", "news", str(tmp_path / "list.csv"))):
        assert cli_run(host, *args).exit_code == 0
    (tmp_path / "price-list.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    (tmp_path / "ofertă.txt").write_text("Prețuri de primăvară\n", encoding="utf-8")
    created = cli_run(host, "campaign", "create", "--subject", "Spring news", "--body-file",
                      str(tmp_path / "body.html"), "--list", "news", "--from", "news@example.com",
                      "--attach", str(tmp_path / "price-list.pdf"), "--attach", str(tmp_path / "ofertă.txt"))
    assert created.exit_code == 0, created.output
    cli_run(host, "campaign", "send", created.output.split()[-1])
    from postroom.core import scheduler
    scheduler.run_due(host, limit=100)

    received = sink.wait_for(2)
    verify = dnsfunc_for(dns_server)
    for mail in received:
        assert {a.get_filename() for a in mail.message.iter_attachments()} == {"price-list.pdf", "ofertă.txt"}
        signed = signature_of(mail)["h"].lower().split(":")
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed)
        assert dkim.verify(mail.data, dnsfunc=verify)


def test_a_signed_mail_altered_on_the_way_no_longer_verifies(signing_host, cli_run, sink, dns_server):
    """The test above could not fail if verify accepted anything: show it refuses a change."""
    host = signing_host()
    gen(cli_run, host, "example.com")
    publish(cli_run, host, dns_server, "example.com")
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "Pay 100 EUR", "--body", "y")
    data = sink.wait_for(1)[0].data

    assert not dkim.verify(data.replace(b"Pay 100 EUR", b"Pay 900 EUR"), dnsfunc=dnsfunc_for(dns_server))


def test_remove_deletes_the_key_and_mail_leaves_unsigned_again(signing_host, cli_run, sink, tmp_path):
    host = signing_host()
    gen(cli_run, host, "example.com")
    assert cli_run(host, "dkim", "remove", "example.com").exit_code == 0

    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")

    assert sink.wait_for(1)[0].message["DKIM-Signature"] is None
    assert not (tmp_path / "data" / "dkim" / "example.com.postroom.key").exists()
    assert "no DKIM key" in cli_run(host, "dkim", "list").output


@pytest.mark.parametrize("args, words", [
    (("generate", "not a domain"), "is not a domain name"),
    (("generate", "example.com", "--selector", "bad selector!"), "is not a DKIM selector"),
    (("show", "example.org"), "example.org has no DKIM key"),
    (("remove", "example.org"), "example.org has no DKIM key"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(signing_host, cli_run, args, words):
    result = cli_run(signing_host(), "dkim", *args)
    assert result.exit_code != 0
    assert words in result.output and "Traceback" not in result.output


def test_a_second_key_for_the_same_domain_is_refused(signing_host, cli_run):
    host = signing_host()
    gen(cli_run, host, "example.com")
    result = cli_run(host, "dkim", "generate", "example.com", "--selector", "other")
    assert result.exit_code != 0
    assert "already has a DKIM key" in result.output


def test_a_key_whose_file_is_missing_fails_the_mail_instead_of_sending_it_unsigned(
        signing_host, cli_run, sink, tmp_path):
    host = signing_host()
    gen(cli_run, host, "example.com")
    (tmp_path / "data" / "dkim" / "example.com.postroom.key").unlink()

    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "x", "--body", "y")
    shown = json.loads(cli_run(host, "queue", "list", "--state", "exception", "--json").output)

    assert sink.received() == []
    assert len(shown) == 1
    assert "DKIM private key of example.com cannot be read on this machine" in shown[0]["failure_reason"]
