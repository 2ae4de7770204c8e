"""Savepoints: every nested transaction has one, except the core writes that join a flat
block (the inbound gateway stores each message in one), on both engines."""
import logging

import pytest

from postroom.core import chatter, records
from postroom.core.models import Message, Record


class _Statements(logging.Handler):
    """The SQL peewee executes, as its logger reports it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.sql = []

    def emit(self, record):
        self.sql.append(str(record.msg[0]) if isinstance(record.msg, tuple) else str(record.getMessage()))


@pytest.fixture
def statements():
    handler, logger = _Statements(), logging.getLogger("peewee")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.sql
    logger.removeHandler(handler)
    logger.setLevel(level)


def _savepoints(sql):
    return [s for s in sql if s.startswith("SAVEPOINT")]


def test_a_record_and_its_post_inside_a_flat_block_make_no_savepoints_of_their_own(make_host, db_url, statements):
    host = make_host(db_url=db_url)
    with host.transaction():
        with host.transaction(flat=True):
            rec = records.create_record(host, "generic", "Joined")
            chatter.post_message(host, rec, "hello")
    assert len(_savepoints(statements)) == 1  # the flat block's own
    statements.clear()
    with host.transaction():
        rec = records.create_record(host, "generic", "Nested")
        chatter.post_message(host, rec, "hello")
    assert len(_savepoints(statements)) == 2  # outside a flat block each keeps its own


def test_a_failure_in_a_flat_block_rolls_back_what_joined_it(make_host, db_url):
    host = make_host(db_url=db_url)
    with host.transaction():
        with pytest.raises(RuntimeError):
            with host.transaction(flat=True):
                rec = records.create_record(host, "generic", "Undone")
                chatter.post_message(host, rec, "hello")
                raise RuntimeError("the delivery fails after the post")
        records.create_record(host, "generic", "Kept")
    assert [r.name for r in Record.select()] == ["Kept"]
    assert Message.select().count() == 0


def test_a_block_that_does_not_join_keeps_its_savepoint_inside_a_flat_one(make_host, db_url):
    host = make_host(db_url=db_url)
    with host.transaction(flat=True):
        records.create_record(host, "generic", "Before")
        try:
            with host.transaction():  # e.g. a listener whose failure is caught and logged
                records.create_record(host, "generic", "Listener's")
                raise ValueError("the listener fails")
        except ValueError:
            pass
    assert [r.name for r in Record.select()] == ["Before"]
