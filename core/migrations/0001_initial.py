"""Core tables."""


def up(migrator, db):
    from postroom.core.models import CORE_MODELS
    db.create_tables(CORE_MODELS)
