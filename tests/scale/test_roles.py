"""Roles split across processes, as across machines: an inbound-only `postroom serve` runs
the gateway and sends nothing; scheduler workers send and do not listen; together they do
the whole job on one PostgreSQL database."""
import re
import smtplib
import socket
import time

import pytest

from postroom.core.models import Message
from postroom.plugins.inbound import aliases
from tests.support.smtp import free_port

from .harness import enqueue, outgoing_left, receipts, wait_until


def listening(port) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.heavy
def test_inbound_and_scheduler_roles_run_apart_and_share_one_database(deployment, smtp_sink):
    sink = smtp_sink()
    port = free_port()
    dep = deployment(plugins=["mail_queue", "inbound"], smtp_host=sink.host, smtp_port=sink.port,
                     inbound_port=port)
    aliases.add_alias(dep.host, "support", "generic")
    wanted = enqueue(dep.host, 100)

    dep.serve("--role", "inbound")
    wait_until(lambda: listening(port), 60, what="the gateway to listen")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("ann@client.test", ["support@example.com"],
                        b"From: ann@client.test\r\nTo: support@example.com\r\nSubject: Hello\r\n"
                        b"Message-Id: <roles1@client.test>\r\n\r\nHi\r\n")
    assert Message.select().where(Message.message_id == "<roles1@client.test>").count() == 1
    time.sleep(2)  # ten poll intervals: an inbound-only process never runs the queue
    assert sink.received() == [] and outgoing_left(dep) == 100

    dep.serve("--role", "scheduler", "--workers", "2")
    wait_until(lambda: outgoing_left(dep) == 0, 120, 0.3, what="the scheduler workers to drain the queue")
    got = receipts(sink)
    assert {r: ids[0] for r, ids in got.items()} == wanted and all(len(i) == 1 for i in got.values())
    log = dep.log()
    assert log.count("listening") == 1  # only the inbound process opened the gateway
    assert log.count(", role inbound, plugins") == 1 and log.count(", role scheduler, plugins") == 2


@pytest.mark.heavy
def test_inbound_workers_share_one_port_and_each_message_is_stored_once(deployment):
    port = free_port()
    dep = deployment(plugins=["inbound"], inbound_port=port)
    aliases.add_alias(dep.host, "support", "generic")
    dep.serve("--role", "inbound", "--workers", "2")
    wait_until(lambda: dep.log().count("listening") >= 2, 60, what="two gateways to listen")
    for i in range(40):  # one connection each, so the kernel spreads them over both listeners
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail(f"c{i}@client.test", ["support@example.com"],
                            f"From: c{i}@client.test\r\nTo: support@example.com\r\nSubject: n{i}\r\n"
                            f"Message-Id: <reuse{i}@client.test>\r\n\r\nHi\r\n".encode())
    stored = Message.select().where(Message.message_id.startswith("<reuse")).count()
    assert stored == 40
    pids = set(re.findall(r"\S+ \S+ (\d+) INFO postroom[.\w]*: inbound .*<reuse\d+@client.test>", dep.log()))
    assert len(pids) == 2, f"messages were handled by processes {pids}: one listener got everything"


def test_several_http_workers_on_one_machine_are_refused(make_host, cli_run):
    host = make_host(plugins=["inbound"])
    result = cli_run(host, "serve", "--workers", "3", "--role", "http")
    assert result.exit_code != 0
    assert "--role http runs one HTTP service per machine" in result.output
    assert "Traceback" not in result.output
