"""Pacing and back-off state per recipient domain."""


def up(migrator, db):
    from postroom.plugins.mail_queue.models import DomainPace
    db.create_tables([DomainPace], safe=True)
