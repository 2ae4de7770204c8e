"""`postroom doctor` on signing: the published DKIM key against the signing key, sending
domains without a key, SPF coverage of this host or the relay, DMARC alignment of From
with d=; all asked of a real DNS server on loopback."""
import json

import pytest

from tests.support.dns import DnsServer

SPF_OK = "v=spf1 ip4:192.0.2.10 -all"


@pytest.fixture
def dns_server():
    with DnsServer({"example.com": [SPF_OK],
                    "_dmarc.example.com": ["v=DMARC1; p=quarantine"]}) as server:
        yield server


@pytest.fixture
def host(make_host, dns_server):
    def factory(**config):
        values = {"dns_resolver": dns_server.address, "dns_timeout": "2", "smtp_timeout": "1",
                  "mail_public_ip": "192.0.2.10", "mail_from": "news@example.com"}
        values.update(config)
        return make_host(plugins=["mail_queue"], config=values)
    return factory


@pytest.fixture
def doctor(cli_run):
    def run(host):
        data = json.loads(cli_run(host, "doctor", "--json").output)
        return {c["name"]: c for c in data["checks"]}
    return run


def generate_and_publish(cli_run, host, dns_server, domain="example.com", *args):
    assert cli_run(host, "dkim", "generate", domain, *args).exit_code == 0
    shown = json.loads(cli_run(host, "dkim", "show", domain, "--json").output)
    dns_server.records[shown["record_name"]] = [shown["record_value"]]
    return shown


def test_a_published_matching_key_an_spf_covering_this_host_and_aligned_dmarc_pass(
        host, cli_run, dns_server, doctor):
    h = host()
    generate_and_publish(cli_run, h, dns_server)

    found = doctor(h)

    assert found["dkim.example.com"]["status"] == "ok", found["dkim.example.com"]
    assert found["dkim.unsigned"]["status"] == "ok"
    assert found["spf.relay"]["status"] == "ok"
    assert "covers this host (192.0.2.10)" in found["spf.relay"]["finding"]
    assert found["dmarc.alignment"]["status"] == "ok"
    assert found["dmarc.alignment"]["finding"] == "From example.com aligns with DKIM d=example.com (relaxed)"


def test_a_key_not_published_fails(host, cli_run, doctor):
    h = host()
    assert cli_run(h, "dkim", "generate", "example.com").exit_code == 0

    check = doctor(h)["dkim.example.com"]

    assert check["status"] == "fail"
    assert check["finding"].startswith("no DKIM record at postroom._domainkey.example.com")
    assert "postroom dkim show example.com" in check["remedy"]


@pytest.mark.parametrize("algorithm", ["rsa-2048", "ed25519"])
def test_a_published_key_that_is_not_the_signing_key_fails(host, cli_run, dns_server, doctor, algorithm):
    h = host()
    old = generate_and_publish(cli_run, h, dns_server, "example.com", "--algorithm", algorithm)
    # The operator regenerated the key but DNS still serves the old one.
    assert cli_run(h, "dkim", "remove", "example.com").exit_code == 0
    assert cli_run(h, "dkim", "generate", "example.com", "--algorithm", algorithm).exit_code == 0
    assert dns_server.records[old["record_name"]] == [old["record_value"]]

    check = doctor(h)["dkim.example.com"]

    assert check["status"] == "fail"
    assert "the DNS record does not match the signing key" in check["finding"]


def test_mail_sent_from_a_domain_without_a_key_is_a_warning(host, cli_run, dns_server, doctor):
    h = host()
    generate_and_publish(cli_run, h, dns_server)
    cli_run(h, "mail", "send", "--bulk", "--to", "ann@example.org", "--from", "shop@example.net",
            "--subject", "x", "--body", "y")

    check = doctor(h)["dkim.unsigned"]

    assert check["status"] == "warn"
    assert "mail is sent from example.net without a DKIM key" in check["finding"]
    assert check["remedy"] == "postroom dkim generate example.net"


def test_an_spf_record_that_does_not_cover_this_host_fails(host, dns_server, doctor):
    dns_server.records["example.com"] = ["v=spf1 ip4:198.51.100.7 -all"]

    check = doctor(host())["spf.relay"]

    assert check["status"] == "fail"
    assert "does not cover this host (192.0.2.10: fail)" in check["finding"]
    assert "ip4:192.0.2.10" in check["remedy"]


def test_spf_coverage_follows_includes(host, dns_server, doctor):
    dns_server.records["example.com"] = ["v=spf1 include:_spf.example.net ~all"]
    dns_server.records["_spf.example.net"] = ["v=spf1 ip4:192.0.2.0/24 -all"]

    assert doctor(host())["spf.relay"]["status"] == "ok"


def test_strict_dmarc_fails_when_the_key_is_the_parent_domains(host, cli_run, dns_server, doctor):
    h = host(mail_from="news@mail.example.com")
    generate_and_publish(cli_run, h, dns_server)
    dns_server.records["_dmarc.mail.example.com"] = ["v=DMARC1; p=reject; adkim=s"]

    check = doctor(h)["dmarc.alignment"]

    assert check["status"] == "fail"
    assert "From mail.example.com does not align with DKIM d=example.com under strict" in check["finding"]


def test_a_private_key_file_missing_on_this_machine_fails(host, cli_run, dns_server, doctor, tmp_path):
    h = host()
    generate_and_publish(cli_run, h, dns_server)
    (tmp_path / "data" / "dkim" / "example.com.postroom.key").unlink()

    check = doctor(h)["dkim.example.com"]

    assert check["status"] == "fail" and "missing on this machine" in check["finding"]


def test_one_doctor_run_asks_dns_once_per_name_for_the_core_and_the_plugin(host, cli_run, dns_server, doctor):
    h = host()
    generate_and_publish(cli_run, h, dns_server)
    dns_server.queries.clear()

    checks = doctor(h)

    assert checks["dns.dmarc"]["status"] == "ok" and checks["dmarc.alignment"]["status"] == "ok"
    # the core's DMARC check and the plugin's alignment check share one answer
    assert dns_server.queries.count("_dmarc.example.com") == 1
    doctor(h)  # and the next run asks afresh
    assert dns_server.queries.count("_dmarc.example.com") == 2
