"""Counters of send outcomes (for /metrics)."""


def up(migrator, db):
    from postroom.plugins.mail_queue.models import OutcomeCount
    db.create_tables([OutcomeCount], safe=True)
