"""Inbound tables: aliases, decision log, originals."""


def up(migrator, db):
    from postroom.plugins.inbound.models import MODELS
    db.create_tables(MODELS)
