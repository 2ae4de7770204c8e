"""A real Postfix (Debian's package, a private instance on a loopback port) in front of a
real gateway (`postroom serve`), configured from the very snippets of docs/deploy.md: what
an operator who follows the doc gets. Each test stops its Postfix; nothing is left running.
"""
import os
import pathlib
import shutil
import smtplib
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest

from postroom.core import chatter, records
from postroom.core.models import Message, Record
from postroom.plugins.inbound import aliases
from tests.docs.snippets import ini_values, main_cf_settings, postfix_files, section_blocks
from tests.scale.harness import Deployment, wait_until
from tests.support import postfix
from tests.support.smtp import SMTPSink, free_port

pytestmark = [pytest.mark.heavy,
              pytest.mark.skipif(postfix.missing() is not None, reason=str(postfix.missing()))]

DOC = "deploy.md"
LMTP = "### LMTP transport (recommended)"
PIPE = "### Pipe transport (`postroom inbound deliver`)"
OUTGOING = "### Postroom's own outgoing mail through the same Postfix"


def documented_postfix(heading, replace: dict, relayhost=None) -> postfix.PrivatePostfix:
    """A private Postfix from the doc's main.cf / master.cf / table snippets under `heading`,
    with the doc's addresses and paths replaced by the test's (`replace`)."""
    def ours(text):
        for doc_value, test_value in replace.items():
            text = text.replace(doc_value, test_value)
        return text
    files = {name: ours(text) for name, text in postfix_files(DOC, heading).items()}
    main = main_cf_settings(files.pop("/etc/postfix/main.cf"))
    # The doc's MX listens on every interface; this one never leaves loopback.
    main.pop("inet_interfaces", None)
    master_cf = files.pop("/etc/postfix/master.cf", "")
    tables = {name.rsplit("/", 1)[1]: text for name, text in files.items()}
    return postfix.PrivatePostfix(main=main, master_cf=master_cf, tables=tables, relayhost=relayhost)


def documented_ini(heading, replace: dict) -> dict:
    [block] = section_blocks(DOC, heading, "ini")
    values = ini_values(block)
    return {k: replace.get(v, v) for k, v in values.items()}


def mail(subject, sender="ann@client.test", to="support@example.com", mid=None, headers=""):
    mid = mid or f"<{subject.lower().replace(' ', '.')}.{time.monotonic_ns()}@client.test>"
    return (f"From: Ann <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-Id: {mid}\r\n{headers}"
            f"\r\nHello from Ann.\r\n").encode()


def send(mx, rcpt, data, sender="ann@client.test", deadline=60):
    """One SMTP transaction with Postfix, as a client would make it; an RCPT answered
    "verification in progress" (Postfix is still asking Postroom) is tried again.
    Returns (stage, code, text): the RCPT reply if it was not 250, else the DATA reply."""
    end = time.monotonic() + deadline
    while True:
        with smtplib.SMTP("127.0.0.1", mx.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail(sender)
            code, text = client.rcpt(rcpt)
            if code == 250:
                return ("DATA",) + client.data(data)
            client.rset()
        if not (code == 450 and b"in progress" in text) or time.monotonic() > end:
            return "RCPT", code, text
        time.sleep(0.5)


def records_named(dep, name):
    dep.fresh()
    return list(Record.select().where(Record.name == name))


def wait_listening(port, timeout=60):
    import socket

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(up, timeout, what=f"the gateway on port {port}")


@pytest.fixture
def sink():
    with SMTPSink() as s:
        yield s


def test_lmtp_form_end_to_end_records_replies_refusals_and_deferred_mail(make_host, tmp_path, sink):
    gateway_port = free_port()
    mx = documented_postfix(LMTP, {"127.0.0.1:2424": f"127.0.0.1:{gateway_port}"},
                            relayhost=f"[127.0.0.1]:{sink.port}")
    with mx:
        config = documented_ini(LMTP, {"2424": str(gateway_port)})
        config.update(documented_ini(OUTGOING, {"25": str(mx.port)}))
        dep = Deployment(make_host, tmp_path, f"sqlite:///{tmp_path / 'postroom.db'}",
                         ["mail_queue", "inbound"], config)
        try:
            aliases.add_alias(dep.host, "support", "generic")
            dep.serve("--role", "all")
            wait_listening(gateway_port)

            # An alias mail through Postfix (LMTP) opens a record.
            stage, code, text = send(mx, "support@example.com", mail("Printer on fire"))
            assert (stage, code) == ("DATA", 250), text
            wait_until(lambda: records_named(dep, "Printer on fire"), 60, what="the record\n" + mx.log()[-2000:])
            [rec] = records_named(dep, "Printer on fire")

            # Postroom's answer leaves through the same Postfix, relayed to the sink...
            ann = records.find_partner(dep.host, "ann@client.test", required=False) or \
                records.create_partner(dep.host, "Ann", "ann@client.test")
            chatter.post_message(dep.host, rec, "We are on it", subject="Re: Printer on fire",
                                 partner_ids=[ann.id])
            sink.wait_for(1, timeout=60)
            [out] = sink.received()
            assert out.rcpt_tos == ["ann@client.test"]
            assert "mx.postroom.test" in str(out.message["Received"])  # it went through Postfix
            # ... and Ann's reply to it, through Postfix again, threads onto the record.
            reply_to = str(out.message["Reply-To"] or out.message["From"])
            address = reply_to[reply_to.index("<") + 1:reply_to.index(">")] if "<" in reply_to else reply_to
            stage, code, text = send(mx, address, mail("Re: Re: Printer on fire", to=address,
                                                       headers=f"In-Reply-To: {out.message_id}\r\n"))
            assert (stage, code) == ("DATA", 250), text

            def replied():
                dep.fresh()
                return Message.select().where((Message.record == rec.id) & (Message.message_type == "email")
                                              & (Message.subject == "Re: Re: Printer on fire")).exists()
            wait_until(replied, 60, what="the reply on the record")

            # An unknown address is refused by Postfix at RCPT, 550 5.1.1, and no bounce is
            # made: the queue is empty once the probe is done. inbound log names the probe.
            stage, code, text = send(mx, "nobody@example.com", mail("Lost"))
            assert (stage, code) == ("RCPT", 550), text
            assert text.startswith(b"5.1.1 <nobody@example.com>: Recipient address rejected"), text
            wait_until(lambda: mx.queue() == [], 30, what="an empty Postfix queue")
            assert "sender non-delivery notification" not in mx.log()
            log = dep.log()
            assert "inbound probe-refused refused: peer=127.0.0.1" in log and "to=<nobody@example.com>" in log

            # The gateway stops: a known address is still accepted, queued and deferred;
            # a new one (never verified) gets 450 and stays with its sender.
            dep.stop()
            aliases.add_alias(dep.host, "sales", "generic")
            stage, code, text = send(mx, "support@example.com", mail("While away"))
            assert (stage, code) == ("DATA", 250), text
            wait_until(lambda: [q["queue_name"] for q in mx.queue()] == ["deferred"], 60,
                       what="the mail deferred in Postfix's queue")
            [queued] = mx.queue()
            assert "Connection refused" in queued["recipients"][0]["delay_reason"]
            stage, code, text = send(mx, "sales@example.com", mail("New alias"))
            assert (stage, code) == ("RCPT", 450), text
            assert records_named(dep, "While away") == []

            # The gateway is back: `postqueue -f` delivers the deferred mail, once.
            dep.serve("--role", "all")
            wait_listening(gateway_port)
            mx.flush()
            wait_until(lambda: records_named(dep, "While away"), 60, what="the deferred mail\n" + mx.log()[-2000:])
            wait_until(lambda: mx.queue() == [], 30, what="an empty Postfix queue")
            assert len(records_named(dep, "While away")) == 1
        finally:
            dep.stop()


def _launcher(folder: pathlib.Path) -> pathlib.Path:
    """`postroom` for the pipe's `postroom` user. This venv's interpreter lives under
    /root (mode 0700 here), which no other user may enter; the operator's
    /opt/postroom/.venv has no such problem. Debian's python3 of the same version runs the
    same installed code instead."""
    system = pathlib.Path("/usr/bin/python3")
    version = subprocess.run([str(system), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip() if system.exists() else ""
    if version != str(sys.version_info[:2]):
        pytest.skip(f"no /usr/bin/python3 of version {sys.version_info[:2]} for the postroom user")
    path = folder / "postroom"
    path.write_text(f"#!{system}\nimport site, sys\nsite.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
                    "from postroom.cli import main\nsys.exit(main())\n")
    path.chmod(0o755)
    return path


def test_pipe_form_delivers_and_defers_while_the_config_cannot_be_read(make_host, tmp_path):
    try:
        shutil.chown(tmp_path, "postroom")  # just to see the user exists
    except LookupError:
        pytest.skip("no `postroom` user (.ci/run creates it, as docs/deploy.md says)")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="postroom-pipe-"))
    try:
        folder.chmod(0o755)
        db = folder / "postroom.db"
        host = make_host(plugins=["inbound"], db_url=f"sqlite:///{db}", config={"log_dir": str(folder / "logs")})
        aliases.add_alias(host, "support", "generic")
        host.db.close()
        config = folder / "postroom.cfg"
        shutil.copy(host.config.path, config)
        for path in [folder, *folder.rglob("*")]:
            shutil.chown(path, "postroom", "postroom")
        os.chmod(config, 0o600)
        shutil.chown(config, "root", "root")  # the mistake: the postroom user may not read it

        mx = documented_postfix(PIPE, {"/opt/postroom/.venv/bin/postroom": str(_launcher(folder)),
                                       "/etc/postroom/postroom.cfg": str(config)})
        with mx:
            stage, code, text = send(mx, "support@example.com", mail("Via the pipe"))
            assert (stage, code) == ("DATA", 250), text

            def deferred():
                return [r for q in mx.queue() for r in q["recipients"] if "delay_reason" in r]
            wait_until(deferred, 60, what="the pipe's exit 75 to defer the mail\n" + mx.log()[-2000:])
            assert "4.3.0" in deferred()[0]["delay_reason"]
            assert "cannot read config file" in deferred()[0]["delay_reason"]

            shutil.chown(config, "root", "postroom")
            os.chmod(config, 0o640)  # as docs/deploy.md says
            mx.flush()
            wait_until(lambda: mx.queue() == [], 60, what="delivery after the fix\n" + mx.log()[-2000:])
            host.db.connect(reuse_if_open=True)
            assert [r.name for r in Record.select()] == ["Via the pipe"]
            assert "status=sent (delivered via postroom service (250 2.0.0 Ok: created generic," in mx.log()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
