"""Outgoing mails, servers, daily counter."""


def up(migrator, db):
    from postroom.plugins.mail_queue.models import MODELS
    db.create_tables(MODELS)
