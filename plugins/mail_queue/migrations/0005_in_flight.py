"""Columns for mails whose fate is in doubt: `sending_since` (set while a worker talks SMTP
about the mail) and `doubtful` (how many attempts may have delivered it)."""
import peewee as pw

from postroom.core.db import UTCDateTimeField


def up(migrator, db):
    # Fresh databases get these columns from 0001 (it creates the current models).
    have = {c.name for c in db.get_columns("mail_queue_mail")}
    ops = []
    if "sending_since" not in have:
        ops.append(migrator.add_column("mail_queue_mail", "sending_since", UTCDateTimeField(null=True)))
    if "doubtful" not in have:
        ops.append(migrator.add_column("mail_queue_mail", "doubtful", pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])))
    if ops:
        migrator.migrate(*ops)
