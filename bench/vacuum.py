"""Vacuum benchmark: 1,000,000 sent notifications (and sent mails) past their retention.

Setup is set-based SQL (INSERT … SELECT over a cross join), then the whole vacuum runs as
`postroom vacuum` would, one chunk per transaction. Prints one JSON line: seconds to vacuum,
rows removed per plugin, and the longest single transaction (it must stay short: other
work keeps flowing while the vacuum runs).

    python bench/vacuum.py [--db URL] [--rows N] [--batch-size N]
"""
import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time

import peewee as pw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from postroom.core.config import Config  # noqa: E402
from postroom.core.host import Host  # noqa: E402
from postroom.core.models import Message, Notification, Partner, Record  # noqa: E402


def seed(host, rows):
    """`rows` sent email notifications (messages × partners), 200 days old."""
    old = host.clock.now() - dt.timedelta(days=200)
    side = math.isqrt(rows)
    messages, partners = side, math.ceil(rows / side)
    with host.transaction():
        record = Record.create(model="generic", name="bench", created_at=old)
        for start in range(0, partners, 1000):
            Partner.insert_many([{"name": f"P{i}", "email": f"p{i}@example.com",
                                  "email_normalized": f"p{i}@example.com", "created_at": old}
                                 for i in range(start, min(partners, start + 1000))]).execute()
        for start in range(0, messages, 1000):
            Message.insert_many([{"record": record.id, "model": "generic", "body": "", "created_at": old,
                                  "message_id": f"<bench{i}@example.com>"}
                                 for i in range(start, min(messages, start + 1000))]).execute()
        when = pw.Value(old, converter=Notification.updated_at.db_value)
        query = (Message.select(Message.id, Partner.id, pw.Value("email"), pw.Value("sent"),
                                pw.Value(False), when)
                 .join(Partner, pw.JOIN.CROSS).limit(rows))
        Notification.insert_from(query, [Notification.message, Notification.partner,
                                         Notification.notification_type, Notification.status,
                                         Notification.is_read, Notification.updated_at]).execute()
    return Notification.select().count()


def seed_mails(host):
    """One kept, sent mail per notification, 200 days old (only when mail_queue exists)."""
    model = next((m for m in host.pm.hook.postroom_models() for m in m
                  if m._meta.table_name == "mail_queue_mail"), None)
    if model is None:
        return 0
    old = host.clock.now() - dt.timedelta(days=200)
    value = {f.name: pw.Value(v, converter=getattr(model, f.name).db_value) for f, v in (
        (model.state, "sent"), (model.sent_at, old), (model.created_at, old), (model.updated_at, old),
        (model.body_html, ""), (model.bulk, False), (model.auto_delete, False), (model.attempts, 1))}
    query = Notification.select(Notification.message, Notification.id,
                                pw.Value("<m").cast("TEXT").concat(Notification.id.cast("TEXT"))
                                .concat(pw.Value("@example.com>").cast("TEXT")),
                                *value.values())
    fields = [model.message, model.notification_id, model.message_id] + [getattr(model, k) for k in value]
    with host.transaction():
        model.insert_from(query, fields).execute()
    return model.select().count()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="postroom-bench-")
    url = args.db or f"sqlite:///{tmp}/bench.db"
    host = Host(Config({"database": url, "log_dir": tmp, "log_level": "WARNING", "domains": "example.com",
                        "vacuum_batch_size": args.batch_size}, base_dir=tmp)).open()
    host.enable_plugin("auto_vacuum")
    if "mail_queue" in host.available:
        host.enable_plugin("mail_queue")
    t0 = time.perf_counter()
    notifications = seed(host, args.rows)
    mails = seed_mails(host)
    setup = time.perf_counter() - t0
    if host.db.engine == "postgresql":
        host.db.execute_sql("ANALYZE")

    from postroom.plugins.auto_vacuum.service import vacuum_all
    statements = host.statements()
    report = vacuum_all(host)
    statements = host.statements() - statements
    left = Notification.select().count()
    chunks = sum(e["chunks"] for e in report["plugins"])
    print(json.dumps({
        "bench": "vacuum", "engine": host.db.engine, "batch_size": args.batch_size,
        "seeded": {"notifications": notifications, "mails": mails}, "setup_seconds": round(setup, 2),
        "vacuum_seconds": report["seconds"], "removed": report["removed"],
        "removed_by_plugin": {e["plugin"]: e["removed"] for e in report["plugins"]},
        "seconds_by_plugin": {e["plugin"]: e["seconds"] for e in report["plugins"]},
        "longest_transaction_by_plugin": {e["plugin"]: e["longest_transaction"] for e in report["plugins"]},
        "errors": {e["plugin"]: e["error"] for e in report["plugins"] if e["error"]},
        "notifications_left": left, "transactions": chunks,
        "longest_transaction_seconds": report["longest_transaction"],
        "statements_per_transaction": round(statements / max(chunks, 1), 2)}))
    host.close()


if __name__ == "__main__":
    main()
