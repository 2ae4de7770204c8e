"""Console tables: operators, sessions, failed login attempts."""


def up(migrator, db):
    from postroom.core.console.models import CONSOLE_MODELS
    db.create_tables(CONSOLE_MODELS)
