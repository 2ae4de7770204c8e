"""The mail_marketing tables."""


def up(migrator, db):
    from postroom.plugins.mail_marketing.models import MODELS
    db.create_tables(MODELS)
