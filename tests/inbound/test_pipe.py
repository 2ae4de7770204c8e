"""`postroom inbound deliver` as an MTA's pipe transport runs it: a real subprocess, one
message on stdin, sysexits codes (0 accepted, 67 unknown recipient, 65 bad message, 75 retry)."""
import os
import shutil
import subprocess
import sys

import pytest

from postroom.core.models import Record
from postroom.plugins.inbound import aliases

from .conftest import message

POSTROOM = shutil.which("postroom", path=os.path.dirname(sys.executable)) or "postroom"


@pytest.fixture
def host(inbound_host):
    h = inbound_host(inbound_max_size=5000)
    aliases.add_alias(h, "support", "generic")
    aliases.add_alias(h, "staff", "generic", contact="partners")
    return h


def pipe(host, data: bytes, *args):
    return subprocess.run([POSTROOM, "--config", host.config.path, "inbound", "deliver", *args],
                          input=data, capture_output=True, timeout=60)


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")  # what a pipe transport hands over


def test_accepted_mail_exits_0_and_is_stored(host):
    result = pipe(host, lf(message(subject="Via pipe")), "--recipient", "support@example.com",
                  "--sender", "ann@client.test")
    assert result.returncode == 0, result.stderr
    assert b"250 2.0.0 Ok: created generic," in result.stdout
    assert Record.get().name == "Via pipe"


def test_recipient_from_delivered_to_when_none_is_given(host):
    data = lf(message(subject="Guess", headers={"Delivered-To": "support@example.com"}))
    assert pipe(host, data).returncode == 0
    assert Record.get().name == "Guess"


def test_unknown_recipient_exits_67(host):
    result = pipe(host, lf(message()), "--recipient", "nobody@example.com")
    assert result.returncode == 67
    assert result.stderr.decode().startswith("550 5.1.1 <nobody@example.com>")


def test_other_domain_exits_67(host):
    assert pipe(host, lf(message()), "--recipient", "x@elsewhere.org").returncode == 67


def test_a_message_over_the_size_limit_exits_65(host):
    result = pipe(host, lf(message(body="z\n" * 4000)), "--recipient", "support@example.com")
    assert result.returncode == 65 and result.stderr.startswith(b"552 5.3.4")


def test_an_empty_message_exits_65(host):
    assert pipe(host, b"", "--recipient", "support@example.com").returncode == 65


def test_a_refused_sender_exits_65_with_the_reason(host):
    result = pipe(host, lf(message(sender="eve@evil.test")), "--recipient", "staff@example.com")
    assert result.returncode == 65 and b"only known partners may write to staff" in result.stderr


def test_database_unreachable_exits_75_so_the_mta_retries(host, tmp_path):
    cfg = tmp_path / "down.cfg"
    cfg.write_text("[postroom]\ndatabase = postgresql://postgres@127.0.0.1:1/nothing\n"
                   f"log_dir = {tmp_path / 'logs'}\ndomains = example.com\n")
    result = subprocess.run([POSTROOM, "--config", str(cfg), "inbound", "deliver", "--recipient",
                             "support@example.com"], input=lf(message()), capture_output=True, timeout=60)
    assert result.returncode == 75, result.stderr
    assert b"unavailable" in result.stderr


def test_inbound_serve_runs_in_the_foreground_until_sigterm(host):
    import signal
    import smtplib

    from tests.support.smtp import free_port
    port = free_port()
    proc = subprocess.Popen([POSTROOM, "--config", host.config.path, "inbound", "serve", "--port", str(port),
                             "--lmtp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert b"LMTP gateway on 127.0.0.1:%d: listening" % port in proc.stdout.readline()
        client = smtplib.LMTP("127.0.0.1", port, timeout=10)
        code, _ = client.ehlo()
        client.quit()
        assert code == 250
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def _pipe_with(config_path, tmp_path):
    return subprocess.run([POSTROOM, "--config", str(config_path), "inbound", "deliver",
                           "--recipient", "support@example.com", "--sender", "ann@client.test"],
                          input=lf(message()), capture_output=True, timeout=60, cwd=tmp_path)


def test_a_wrong_config_path_defers_the_mail_with_exit_75(tmp_path):
    result = _pipe_with(tmp_path / "no-such.cfg", tmp_path)
    assert result.returncode == 75, result.stderr
    assert b"451 4.3.0 config file not found" in result.stderr
    assert b"No such command" not in result.stderr


def _config(tmp_path, database):
    path = tmp_path / "postroom.cfg"
    path.write_text(f"[postroom]\ndatabase = {database}\nlog_dir = {tmp_path / 'logs'}\n"
                    "domains = example.com\n")
    return path


def test_a_database_folder_that_does_not_exist_defers_the_mail_with_exit_75(tmp_path):
    result = _pipe_with(_config(tmp_path, f"sqlite:///{tmp_path / 'gone' / 'postroom.db'}"), tmp_path)
    assert result.returncode == 75, result.stderr
    assert b"451 4.3.0 no database at " in result.stderr and b"run postroom init" in result.stderr
    assert not (tmp_path / "gone").exists()  # only `postroom init` creates a database


def _initialised(tmp_path):
    path = _config(tmp_path, f"sqlite:///{tmp_path / 'new.db'}")
    subprocess.run([POSTROOM, "--config", str(path), "init"], check=True, capture_output=True, timeout=60)
    return path


def test_a_database_without_the_inbound_plugin_defers_the_mail_with_exit_75(tmp_path):
    result = _pipe_with(_initialised(tmp_path), tmp_path)
    assert result.returncode == 75, result.stderr
    assert b"plugin inbound, which is not enabled" in result.stderr


def test_other_commands_of_a_disabled_plugin_name_the_plugin_not_a_missing_command(tmp_path):
    result = subprocess.run([POSTROOM, "--config", str(_initialised(tmp_path)),
                             "inbound", "log"], capture_output=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.decode().strip() == ("Error: 'inbound' is a command of the plugin inbound, which "
                                              "is not enabled in this deployment (postroom plugins enable inbound)")


def test_a_wrong_argv_in_the_mta_defers_the_mail_with_exit_75(host):
    result = pipe(host, lf(message()), "--recipient", "support@example.com", "--no-such-option")
    assert result.returncode == 75, result.stderr
    assert b"451 4.3.0 No such option '--no-such-option'" in result.stderr

