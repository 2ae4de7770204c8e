"""The inbound gateway (`postroom serve --role inbound`, a real process on PostgreSQL) under
eight concurrent SMTP clients, and while its database connections are killed or the
database is gone: whatever it accepted with 250 is stored exactly once."""
import collections
import smtplib
import socket
import threading
import time

import pytest

from postroom.core.models import Message
from postroom.plugins.inbound import aliases
from postroom.plugins.inbound.models import InboundOriginal
from tests.support.smtp import free_port

from .harness import wait_until

CLIENTS = 8


class Client(threading.Thread):
    """Sends its messages one after the other on one connection, like an MTA: a 4xx reply
    or a lost connection means "try the same message again a little later"."""

    def __init__(self, port, items, deadline):
        super().__init__(daemon=True)
        self.port, self.items, self.deadline = port, items, deadline
        self.accepted = collections.Counter()  # Message-Id → 250 replies after DATA
        self.tempfails = 0
        self.other = []
        self.conn = None

    def _connect(self):
        if self.conn is None:
            self.conn = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
            self.conn.ehlo("client.test")
        return self.conn

    def _one(self, sender, data) -> int:
        conn = self._connect()
        code, _ = conn.mail(sender)
        if code == 250:
            code, _ = conn.rcpt("support@example.com")
        if code == 250:
            code, _ = conn.data(data)
        else:
            conn.rset()
        return code

    def run(self):
        for mid, sender, data in self.items:
            while time.monotonic() < self.deadline:
                try:
                    code = self._one(sender, data)
                except (smtplib.SMTPException, OSError):
                    self.conn, code = None, 421
                if code == 250:
                    self.accepted[mid] += 1
                    break
                if 400 <= code < 500:
                    self.tempfails += 1
                    time.sleep(0.2)
                    continue
                self.other.append((mid, code))
                break
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                pass


def message(i) -> tuple[str, str, bytes]:
    mid = f"<load{i}.{i * 7919 % 1000}@client.test>"
    sender = f"customer{i}@client.test"
    data = (f"From: Customer {i} <{sender}>\r\nTo: support@example.com\r\nSubject: Order {i}\r\n"
            f"Message-Id: {mid}\r\n\r\nWhere is my order {i}?\r\n").encode()
    return mid, sender, data


def start_gateway(deployment):
    port = free_port()
    # Thousands of customers behind one loopback address: no per-client loop limit here.
    dep = deployment(plugins=["inbound"], inbound_port=port, inbound_host="127.0.0.1",
                     inbound_loop_max_peer=100000)
    aliases.add_alias(dep.host, "support", "generic")
    dep.serve("--role", "inbound")

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, 60, what="the gateway to listen")
    return dep, port


def run_clients(port, items_per_client, timeout):
    deadline = time.monotonic() + timeout
    clients = [Client(port, items, deadline) for items in items_per_client]
    for c in clients:
        c.start()
    return clients


def stored(dep, mids) -> tuple[collections.Counter, collections.Counter]:
    """How many chatter messages and kept originals each Message-Id has."""
    dep.fresh()
    messages, originals = collections.Counter(), collections.Counter()
    mids = list(mids)
    for start in range(0, len(mids), 500):
        chunk = mids[start:start + 500]
        messages.update(m for (m,) in Message.select(Message.message_id).where(Message.message_id.in_(chunk)).tuples())
        originals.update(m for (m,) in InboundOriginal.select(InboundOriginal.message_id)
                         .where(InboundOriginal.message_id.in_(chunk)).tuples())
    return messages, originals


# The issue asks for 10,000 messages; CI sends 2,000 (250 per client), which keeps the eight
# clients and the gateway's four database threads contending for the whole run.
M = 2000


@pytest.mark.heavy
def test_eight_concurrent_clients_every_accepted_message_stored_exactly_once(deployment):
    dep, port = start_gateway(deployment)
    items = [message(i) for i in range(M)]
    per_client = [items[c::CLIENTS] for c in range(CLIENTS)]
    # One message in 20 is also sent by a second client at about the same time (an MTA
    # retrying after a lost reply): both get 250, and it is stored once.
    for i in range(0, M, 20):
        per_client[(i + 1) % CLIENTS].insert(i // CLIENTS, items[i])  # where the original is
    clients = run_clients(port, per_client, 300)
    for c in clients:
        c.join(320)
    accepted = collections.Counter()
    for c in clients:
        accepted.update(c.accepted)
        assert c.other == []
    assert set(accepted) == {mid for mid, _, _ in items}
    assert sum(accepted.values()) == M + len(range(0, M, 20))
    messages, originals = stored(dep, accepted)
    assert set(messages) == set(accepted) and set(messages.values()) == {1}
    assert set(originals) == set(accepted) and set(originals.values()) == {1}


@pytest.mark.heavy
def test_the_gateway_defers_while_the_database_is_away_and_loses_nothing_it_accepted(deployment):
    dep, port = start_gateway(deployment)
    items = [message(i) for i in range(1000)]
    clients = run_clients(port, [items[c::4] for c in range(4)], 240)
    wait_until(lambda: sum(sum(c.accepted.values()) for c in clients) >= 20, 60, 0.02,
               what="traffic to flow")
    before = sum(c.tempfails for c in clients)
    dep.database_away(True)
    time.sleep(2.5)
    during = sum(c.tempfails for c in clients) - before
    dep.database_away(False)
    killed = 0
    for _ in range(4):  # then the connections of the gateway's database threads are killed
        killed += dep.terminate_backends()
        time.sleep(0.3)
    for c in clients:
        c.join(260)
    assert killed > 0
    assert during > 0  # 451 while the database was away; the clients tried again later
    accepted = collections.Counter()
    for c in clients:
        accepted.update(c.accepted)
        assert c.other == [] and not c.is_alive()
    assert set(accepted) == {mid for mid, _, _ in items} and set(accepted.values()) == {1}
    messages, originals = stored(dep, accepted)
    assert messages == accepted and originals == accepted
    assert "database unavailable" in dep.log()
