"""Passwords never travel in clear, and no stored server setting carries a control character.

A real SMTP server (aiosmtpd) that offers AUTH without TLS records every AUTH it receives;
the tests assert on what reached it."""
import json
import socket
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner

from postroom.cli import cli
from postroom.core import records
from tests.support.smtp import free_port


class AuthRecorder:
    """Every AUTH attempt (login, password) and every accepted message."""

    def __init__(self):
        self.auth, self.messages, self.lock = [], [], threading.Lock()

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        with self.lock:
            self.auth.append((auth_data.login, auth_data.password))
        return AuthResult(success=True, handled=False)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


def _non_loopback_address():
    """An address of this machine that is not loopback (the source of its default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture
def plain_auth_server():
    """plain_auth_server(address) → (port, recorder): offers AUTH PLAIN/LOGIN without TLS."""
    started = []

    def start(address):
        recorder = AuthRecorder()
        port = free_port()
        controller = Controller(recorder, hostname=address, port=port, authenticator=recorder.authenticator,
                                auth_require_tls=False)
        controller.start()
        started.append(controller)
        return port, recorder
    yield start
    for controller in started:
        controller.stop()


def _host(make_host, address, port, **config):
    values = {"smtp_host": address, "smtp_port": port, "smtp_timeout": "3", "smtp_user": "mailer",
              "smtp_password_env": "POSTROOM_TEST_SMTP_PASSWORD"}
    values.update(config)
    host = make_host(plugins=["mail_queue"], config=values)
    records.ensure_admin(host, "admin@example.com")
    return host


def test_no_auth_in_clear_to_a_server_that_is_not_loopback(make_host, plain_auth_server, cli_run, monkeypatch):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    port, recorder = plain_auth_server(address)
    monkeypatch.setenv("POSTROOM_TEST_SMTP_PASSWORD", "s3cret")
    host = _host(make_host, address, port)

    tested = cli_run(host, "server", "test")
    assert tested.exit_code == 1 and "not sending the password of 'mailer' in clear" in tested.stderr
    cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "Invoice", "--body", "x")
    assert recorder.auth == [] and recorder.messages == []
    [mail] = json.loads(cli_run(host, "queue", "list", "--state", "exception", "--json").output)
    assert "not sending the password" in mail["failure_reason"] and "starttls or ssl" in mail["failure_reason"]

    # The operator may allow it explicitly; then AUTH goes out, and doctor fails on it.
    allowed = _host(make_host, address, port, smtp_allow_plaintext_auth="true")
    assert cli_run(allowed, "server", "test").exit_code == 0
    assert recorder.auth == [(b"mailer", b"s3cret")]
    doctor = json.loads(cli_run(allowed, "doctor", "--json").output)
    [check] = [c for c in doctor["checks"] if c["name"] == "mail.plaintext_auth"]
    assert check["status"] == "fail" and "unencrypted" in check["finding"]


def test_an_unknown_smtp_encryption_is_a_config_error_and_no_auth_is_sent(tmp_path, plain_auth_server, monkeypatch):
    port, recorder = plain_auth_server("127.0.0.1")
    monkeypatch.setenv("POSTROOM_TEST_SMTP_PASSWORD", "s3cret")
    cfg = tmp_path / "postroom.cfg"
    for value in ("tls", "ssl-tls", "STARTTLS ", "none,ssl"):
        cfg.write_text(f"[postroom]\ndatabase = sqlite:///{tmp_path / 'p.db'}\nlog_dir = {tmp_path / 'logs'}\n"
                       f"smtp_host = 127.0.0.1\nsmtp_port = {port}\nsmtp_user = mailer\n"
                       f"smtp_password_env = POSTROOM_TEST_SMTP_PASSWORD\nsmtp_encryption = {value}\n")
        result = CliRunner().invoke(cli, ["--config", str(cfg), "server", "test"], catch_exceptions=False)
        if value.strip().lower() == "starttls":
            continue  # a known value in another case is read as starttls (tested in tests/core)
        assert result.exit_code == 78, (value, result.output)
        assert "config key smtp_encryption" in result.stderr and "one of none, starttls, ssl" in result.stderr
    assert recorder.auth == []


def test_auth_without_tls_still_works_on_loopback(make_host, plain_auth_server, cli_run, monkeypatch):
    port, recorder = plain_auth_server("127.0.0.1")
    monkeypatch.setenv("POSTROOM_TEST_SMTP_PASSWORD", "s3cret")
    host = _host(make_host, "127.0.0.1", port)
    assert cli_run(host, "mail", "send", "--to", "ann@example.org", "--subject", "S", "--body", "B").exit_code == 0
    assert recorder.auth == [(b"mailer", b"s3cret")] and recorder.messages == [["ann@example.org"]]


@pytest.mark.parametrize("option", ["--host", "--user", "--password-env", "--from-filter"])
def test_server_settings_with_a_line_break_are_refused(make_host, cli_run, option):
    host = make_host(plugins=["mail_queue"])
    values = {"--host": "relay.example.com", "--user": "me", "--password-env": "PW", "--from-filter": "example.com"}
    values[option] = values[option] + "\r\nRCPT TO:<victim@evil.test>"
    args = [a for pair in values.items() for a in pair]
    result = cli_run(host, "server", "add", "relay", *args)
    assert result.exit_code == 2 and f"{option} contains a line break" in result.stderr
    assert json.loads(cli_run(host, "server", "list", "--json").output)[0]["default"] is True  # nothing added
    cli_run(host, "server", "add", "relay", "--host", "relay.example.com")
    edited = cli_run(host, "server", "edit", "relay", option, "x\ny")
    assert edited.exit_code == 2 and "line break" in edited.stderr
    assert json.loads(cli_run(host, "server", "list", "--json").output)[0]["host"] == "relay.example.com"


def test_several_addresses_are_refused_where_one_is_expected(make_host, cli_run):
    host = make_host(plugins=["mail_queue"])
    records.ensure_admin(host, "admin@example.com")
    for option in ("--from", "--to"):
        args = {"--to": "ann@example.org", "--from": "shop@example.com"}
        args[option] = "Boss <b@example.test>, victim@x.test"
        result = cli_run(host, "mail", "send", "--subject", "S", "--body", "B", *[a for p in args.items() for a in p])
        assert result.exit_code == 2, result.output
        assert "several addresses where one is expected" in result.stderr
    assert json.loads(cli_run(host, "queue", "list", "--json").output) == []
    partner = cli_run(host, "partner", "add", "Ann", "ann@example.org, eve@example.net")
    assert partner.exit_code == 2 and "several addresses" in partner.stderr


def test_server_edit_and_remove_are_refused_while_a_running_queue_sends_through_it(make_host, cli_run, clock):
    from postroom.plugins.mail_queue import claims
    host = make_host(plugins=["mail_queue"], config={"mail_lease_seconds": "60"})
    records.ensure_admin(host, "admin@example.com")
    assert cli_run(host, "server", "add", "relay", "--host", "relay.example.com", "--from-filter",
                   "shop.example").exit_code == 0
    cli_run(host, "server", "add", "other", "--host", "other.example.com", "--from-filter", "else.example")
    assert cli_run(host, "mail", "send", "--from", "news@shop.example", "--to", "ann@example.org",
                   "--subject", "S", "--body", "B", "--bulk").exit_code == 0
    _, taken = claims.claim(host, "worker-1", 10)  # what a running Email Queue Manager does first
    assert taken == 1

    for args in (["edit", "relay", "--port", "2525"], ["remove", "relay"]):
        refused = cli_run(host, "server", *args)
        assert refused.exit_code == 4, refused.output
        assert f"cannot {args[0]} server 'relay' now: mail claimed by a running queue" in refused.stderr
    assert cli_run(host, "server", "edit", "other", "--port", "2526").exit_code == 0  # not in use

    clock.advance(seconds=61)  # the claim's lease is over: the run has ended (or died)
    edited = cli_run(host, "server", "edit", "relay", "--port", "2525", "--encryption", "StartTLS")
    assert edited.exit_code == 0 and "relay.example.com:2525, starttls" in edited.output
    assert cli_run(host, "server", "remove", "relay").output.strip() == "server relay removed"
    names = [s["name"] for s in json.loads(cli_run(host, "server", "list", "--json").output)]
    assert names == ["other", "default"]
    assert "no server named 'relay'" in cli_run(host, "server", "remove", "relay").stderr
    assert "change it in the config file" in cli_run(host, "server", "edit", "default", "--port", "1").stderr
