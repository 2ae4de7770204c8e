"""Indexes for claiming: by state in id order, and by claim token."""


def up(migrator, db):
    db.execute_sql('CREATE INDEX IF NOT EXISTS "mail_queue_mail_state" ON "mail_queue_mail" ("state")')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "mail_queue_mail_lease_owner" ON "mail_queue_mail" ("lease_owner")')
    db.execute_sql('DROP INDEX IF EXISTS "mail_queue_mail_state_next_attempt_at"')
