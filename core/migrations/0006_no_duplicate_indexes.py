"""Indexes that only repeated the first column of a unique index on the same table: the
unique index serves those lookups (and ON DELETE CASCADE), and each duplicate cost a page
write per transaction that adds rows (the inbound gateway's batches)."""

INDEXES = ("follower_record_id", "notification_message_id")


def up(migrator, db):
    for name in INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
