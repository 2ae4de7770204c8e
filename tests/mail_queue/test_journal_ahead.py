"""On PostgreSQL each sent mail's journal append goes ahead on a connection of its own and is
confirmed before the next mail's data (`journal_ahead`). When that connection dies mid-drain,
the next mail's data does not go out until the sent mail is written the synchronous way:
every mail still leaves exactly once and the queue ends empty."""
import collections
import logging
import threading
import time

import psycopg

from postroom.plugins.mail_queue.journal_ahead import APPLICATION_NAME
from postroom.plugins.mail_queue.models import OutgoingMail
from tests.support.smtp import SMTPSink

N = 40


def _terminate_journal_connection(db_url) -> int:
    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as admin:
        return len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND application_name = %s",
                                 (name, APPLICATION_NAME)).fetchall())


def test_a_journal_connection_killed_mid_drain_still_sends_every_mail_exactly_once(pg_database, make_host,
                                                                                   caplog):
    caplog.set_level(logging.WARNING, logger="postroom")
    with SMTPSink(pipelining=True, data_delay=0.02) as sink:
        host = make_host(plugins=["mail_queue"], db_url=pg_database,
                         config={"smtp_host": sink.host, "smtp_port": str(sink.port), "mail_batch_size": "50",
                                 "daily_limit": "1000", "mail_from": "shop@example.com"})
        host.service("mail").enqueue([{"email_to": f"r{i}@example.org", "subject": f"News {i}",
                                       "body_html": f"<p>{i}</p>"} for i in range(N)])
        drain = threading.Thread(target=lambda: (host.service("mail").process_queue(), host.db.close()))
        drain.start()
        sink.wait_for(10, timeout=30)
        killed = _terminate_journal_connection(pg_database)
        drain.join(60)
        assert not drain.is_alive()
        got = collections.Counter(r.rcpt_tos[0] for r in sink.received())
    assert killed == 1  # the drain was appending on its own connection
    assert got == {f"r{i}@example.org": 1 for i in range(N)}
    host.db.close()
    assert OutgoingMail.select().where(OutgoingMail.state == "outgoing").count() == 0
    assert any("not confirmed" in r.getMessage() and "put back" in r.getMessage() for r in caplog.records)
