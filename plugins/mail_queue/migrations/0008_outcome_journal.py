"""The outcome journal (mail_queue_progress): each mail's outcome appended right after the
server's answer, applied to mail_queue_mail per batch (see plugins/mail_queue/journal.py)."""


def up(migrator, db):
    # Fresh databases get it from 0001 (it creates the current models).
    from postroom.plugins.mail_queue.models import OutcomeJournal
    db.create_tables([OutcomeJournal], safe=True)
