"""The chart's hourly counts (`mail_queue_hourly_count`), started from the mails the queue
still holds for the last two days (auto-deleted ones are gone: only new batches count them),
and the (state, created_at) index its waiting mails are read through."""
from postroom.core.db import is_postgres


def up(migrator, db):
    from postroom.plugins.mail_queue.models import HourlyCount
    db.create_tables([HourlyCount], safe=True)
    db.execute_sql('CREATE INDEX IF NOT EXISTS "mail_queue_mail_state_created_at" '
                   'ON "mail_queue_mail" ("state", "created_at")')
    if is_postgres(db):
        hour, since = "date_trunc('hour', updated_at)", "(now() AT TIME ZONE 'UTC') - interval '2 days'"
    else:
        hour, since = "strftime('%Y-%m-%d %H:00:00', updated_at)", "datetime('now', '-2 days')"
    if not HourlyCount.select().exists():
        db.execute_sql(
            f'INSERT INTO "mail_queue_hourly_count" ("hour", "outcome", "count") '
            f"SELECT {hour}, CASE state WHEN 'sent' THEN 'sent' ELSE 'failed' END, COUNT(*) "
            f'FROM "mail_queue_mail" WHERE state IN (\'sent\', \'exception\') AND updated_at >= {since} '
            f"GROUP BY 1, 2")
