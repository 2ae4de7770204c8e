"""Ticket numbers and the ticket listing.

A ticket is an ordinary core `Record` with model `helpdesk.ticket`; its number lives in the
record's `values`. The plugin needs no table of its own, so it has no migrations: the
counter is a row in the core `parameter` table.
"""
import peewee as pw

from postroom.core.models import Message, Parameter, Record

MODEL = "helpdesk.ticket"
COUNTER_KEY = "helpdesk.last_ticket_number"


def next_number() -> str:
    """The next ticket number, `HD-00001` onwards.

    Call it inside the creating transaction. The counter is bumped by one UPDATE, which
    holds the row lock until commit on PostgreSQL (SQLite serialises writers anyway), so
    two workers never hand out the same number, and a rolled-back creation gives its
    number back.
    """
    Parameter.insert(key=COUNTER_KEY, value="0").on_conflict_ignore().execute()
    bumped = pw.Cast(pw.Cast(Parameter.value, "INTEGER") + 1, "TEXT")
    Parameter.update(value=bumped).where(Parameter.key == COUNTER_KEY).execute()
    value = Parameter.get(Parameter.key == COUNTER_KEY).value
    return f"HD-{int(value):05d}"


def assign_number(host, record: Record) -> str:
    """Store the next number in `record.values["number"]` and return it."""
    number = next_number()
    # Build on record.values, not on a copy of the creation values: another plugin's
    # postroom_record_created may have added keys to this same record object already.
    record.values = {**(record.values or {}), "number": number}
    Record.update(values=record.values).where(Record.id == record.id).execute()
    host.log.info("helpdesk ticket %s numbered %s", record.id, number)
    return number


def list_tickets(host) -> list[dict]:
    """Every ticket with its number and its chatter's message count, oldest first.

    One query whatever the number of tickets or messages.
    """
    count = pw.fn.COUNT(Message.id)
    query = (Record.select(Record.id, Record.name, Record.values, Record.created_at,
                           count.alias("messages"))
             .join(Message, pw.JOIN.LEFT_OUTER, on=(Message.record == Record.id))
             .where(Record.model == MODEL)
             .group_by(Record.id)
             .order_by(Record.id))
    return [{"id": r.id, "number": (r.values or {}).get("number"), "name": r.name,
             "messages": r.messages, "created_at": r.created_at} for r in query]
