"""The test widget table."""


def up(migrator, db):
    from tests.core.plugin_fixtures import Widget
    db.create_tables([Widget])
