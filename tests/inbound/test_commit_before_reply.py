"""What the gateway promises at any speed: every message it answered 250 is already
committed when the client reads the 250, and is stored exactly once, with 2,000 messages
over 8 concurrent sessions (alias mail, so each one creates a record), on both engines.

Each client checks, the moment it reads a 250, through a database connection of its own
(sqlite3 or psycopg, outside Postroom), that the message's original and its chatter
message are there: an answer sent before the commit would show up as a missing row."""
import collections
import smtplib
import sqlite3
import threading

import psycopg
import pytest

from postroom.plugins.inbound import aliases

SESSIONS = 8
MESSAGES = 2000


def _checker(db_url):
    """A function message_id -> (originals, messages) on a connection of its own."""
    if db_url.startswith("sqlite:///"):
        conn = sqlite3.connect(db_url[len("sqlite:///"):], timeout=30)
        mark = "?"
    else:
        conn = psycopg.connect(db_url, autocommit=True)
        mark = "%s"

    def count(mid):
        one = conn.execute(f"SELECT COUNT(*) FROM inbound_original WHERE message_id = {mark}", (mid,))
        originals = one.fetchone()[0]
        two = conn.execute(f"SELECT COUNT(*) FROM message WHERE message_id = {mark}", (mid,))
        return originals, two.fetchone()[0]
    return conn, count


def _session(port, db_url, items, seen, problems):
    conn, count = _checker(db_url)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("client.test")
            for mid, sender, data in items:
                code, text = client.mail(sender)
                if code == 250:
                    code, text = client.rcpt("support@example.com")
                if code == 250:
                    code, text = client.data(data)
                if code != 250:
                    problems.append(f"{mid}: {code} {text!r}")
                    client.rset()
                    continue
                found = count(mid)
                if found != (1, 1):
                    problems.append(f"{mid}: answered 250 but stored (originals, messages) = {found}")
                seen[mid] += 1
    finally:
        conn.close()


@pytest.mark.heavy
def test_2000_messages_over_8_sessions_each_stored_once_and_committed_before_its_250(
        inbound_host, gateway, db_url):
    # Thousands of records from one loopback client: the loop limits are not the subject here.
    host = inbound_host(db_url=db_url, inbound_loop_max=10 ** 6, inbound_loop_max_peer=10 ** 6)
    aliases.add_alias(host, "support", "generic")
    service = gateway(host)
    items = [(f"<once{i}@client.test>", f"c{i}@client.test",
              (f"From: Client {i} <c{i}@client.test>\r\nTo: support@example.com\r\n"
               f"Subject: Request {i}\r\nMessage-Id: <once{i}@client.test>\r\n\r\nHello {i}\r\n").encode())
             for i in range(MESSAGES)]
    seen, problems = collections.Counter(), []
    threads = [threading.Thread(target=_session, args=(service.port, db_url, items[s::SESSIONS], seen, problems))
               for s in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert problems == []
    assert len(seen) == MESSAGES and set(seen.values()) == {1}
    conn, count = _checker(db_url)
    try:
        stored = collections.Counter(count(mid) for mid, _, _ in items)
    finally:
        conn.close()
    assert stored == {(1, 1): MESSAGES}
