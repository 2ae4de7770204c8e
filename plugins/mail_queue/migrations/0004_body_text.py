"""An enqueuer may give the text/plain part itself (a personalised campaign renders it
from a text template instead of deriving it from each recipient's HTML)."""


def up(migrator, db):
    columns = {c.name for c in db.get_columns("mail_queue_mail")}
    if "body_text" not in columns:
        db.execute_sql('ALTER TABLE "mail_queue_mail" ADD COLUMN "body_text" TEXT')
