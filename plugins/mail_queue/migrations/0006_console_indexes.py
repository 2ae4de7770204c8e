"""Indexes for the console: sent/failed mails by when they last changed (the 24-hour chart),
mails by age (the queue's age filters)."""


def up(migrator, db):
    db.execute_sql('CREATE INDEX IF NOT EXISTS "mail_queue_mail_state_updated_at" '
                   'ON "mail_queue_mail" ("state", "updated_at")')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "mail_queue_mail_created_at" ON "mail_queue_mail" ("created_at")')
