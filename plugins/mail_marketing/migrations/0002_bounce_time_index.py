"""An index on the bounce time, so the vacuum finds old bounce records without a scan."""


def up(migrator, db):
    # Same name peewee gives the index declared on the model (fresh databases get it from 0001).
    db.execute_sql("CREATE INDEX IF NOT EXISTS marketing_bounce_bounced_at ON marketing_bounce (bounced_at)")
