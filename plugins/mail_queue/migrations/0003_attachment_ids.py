"""Outgoing mails carry the ids of their attachments (core attachment store), as JSON."""


def up(migrator, db):
    columns = {c.name for c in db.get_columns("mail_queue_mail")}
    if "attachment_ids" not in columns:
        db.execute_sql('ALTER TABLE "mail_queue_mail" ADD COLUMN "attachment_ids" TEXT')
