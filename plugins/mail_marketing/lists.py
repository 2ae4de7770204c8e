"""Mailing lists, their contacts (streamed CSV import), opt-outs and the blacklist."""
import csv
import itertools

import peewee as pw

from postroom.core import emails
from postroom.core.db import CHUNK, insert_new_rows
from postroom.core.errors import Conflict, InvalidInput, NotFound

from .models import Blacklist, Contact, MailingList

MAX_NAME = 256
MAX_EMAIL = 320
SHOWN_ERRORS = 20     # bad rows listed one by one; the rest are counted


def create_list(host, name: str) -> MailingList:
    """A new, empty list; names are unique."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("list name is empty")
    emails.check_header_text("list name", name)
    with host.transaction():
        if MailingList.get_or_none(MailingList.name == name) is not None:
            raise Conflict(f"a list named {name!r} already exists")
        return MailingList.create(name=name, created_at=host.clock.now())


def get_list(host, name: str) -> MailingList:
    found = MailingList.get_or_none(MailingList.name == (name or "").strip())
    if found is None:
        known = ", ".join(n for (n,) in MailingList.select(MailingList.name).order_by(MailingList.name)
                          .limit(20).tuples()) or "none yet"
        raise NotFound(f"no mailing list {name!r} (lists: {known}); create it with: postroom list create NAME")
    return found


class _Lines:
    """Decodes a binary file line by line (so memory stays flat), counting bytes for the
    progress bar and refusing invalid UTF-8 with its line number."""

    def __init__(self, binfile, on_bytes=None):
        self.binfile, self.on_bytes, self.number = binfile, on_bytes, 0

    def __iter__(self):
        for raw in self.binfile:
            self.number += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"line {self.number} is not valid UTF-8; nothing imported "
                                   f"(save the file as UTF-8 and try again)") from None
            if self.number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a BOM, as spreadsheet programs write it
            if self.on_bytes:
                self.on_bytes(len(raw))
            yield text


def _check_row(row, columns) -> tuple[str, str, str]:
    """(name, email, normalised email) of a good row, else InvalidInput saying why."""
    if len(row) != len(columns):
        raise InvalidInput(f"expected {len(columns)} fields ({','.join(columns)}), found {len(row)}")
    values = dict(zip(columns, row))
    name, address = (values.get("name") or "").strip(), (values.get("email") or "").strip()
    if not address:
        raise InvalidInput("email is missing")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"name is longer than {MAX_NAME} characters")
    emails.check_header_text("name", name)
    if len(address) > MAX_EMAIL:
        raise InvalidInput(f"email is longer than {MAX_EMAIL} characters")
    display, addr = emails.split_address(address)
    return name or display, addr, addr.lower()


def import_contacts(host, list_name: str, binfile, on_bytes=None) -> dict:
    """Import a CSV (header with an `email` column, `name` optional; fields separated by
    commas, semicolons or tabs, as the header shows) into a list.

    Streams the file in chunks inside ONE transaction: bad rows are skipped and reported
    with their line numbers, good rows are kept, and a file that cannot be read to the end
    (invalid UTF-8, broken quoting) imports nothing at all. Addresses already on the list,
    or repeated in the file, are merged (an opted-out contact stays opted out)."""
    mlist = get_list(host, list_name)
    lines = _Lines(binfile, on_bytes)
    stream = iter(lines)
    first = next(stream, None)
    # Spreadsheets in many locales write `;` (or tabs) between fields: the header tells.
    delimiter = max((",", ";", "\t"), key=(first or "").count) if first and first.strip() else ","
    reader = csv.reader(itertools.chain([first] if first is not None else [], stream),
                        delimiter=delimiter, strict=True)
    stats = {"imported": 0, "merged": 0, "bad": 0, "errors": []}
    now = host.clock.now()
    try:
        with host.transaction():
            header = next(reader, None)
            if header is None:
                raise InvalidInput("the file is empty; expected a header row with the columns email,name")
            columns = [c.strip().lower() for c in header]
            if "email" not in columns:
                raise InvalidInput(f"the header row has no 'email' column (found: {','.join(columns) or 'nothing'}); "
                                   f"expected the columns email,name; nothing imported")
            chunk = {}
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                try:
                    name, addr, norm = _check_row(row, columns)
                except InvalidInput as exc:
                    stats["bad"] += 1
                    if len(stats["errors"]) < SHOWN_ERRORS:
                        stats["errors"].append(f"line {reader.line_num}: {exc}")
                    continue
                if norm in chunk:
                    stats["merged"] += 1
                    continue
                chunk[norm] = (mlist.id, name, addr, norm, False, now)
                if len(chunk) >= CHUNK:
                    _flush(host, chunk, stats)
            _flush(host, chunk, stats)
    except csv.Error as exc:
        raise InvalidInput(f"line {lines.number}: the CSV cannot be read ({exc}); check the quoting; "
                           f"nothing imported") from None
    host.log.info("list %s: imported %s contacts, merged %s, %s bad rows", mlist.name,
                  stats["imported"], stats["merged"], stats["bad"])
    return stats


_CONTACT_FIELDS = (Contact.mailing_list, Contact.name, Contact.email, Contact.email_normalized,
                   Contact.opt_out, Contact.created_at)


def _flush(host, chunk: dict, stats: dict) -> None:
    """Insert a chunk's new contacts; one already on the list is merged (left as it is).
    The SQL is written directly (core.db.insert_new_rows): peewee compiling a 500-row
    insert_many cost three times what SQLite took to store it (most of an import)."""
    if not chunk:
        return
    inserted = insert_new_rows(host.db, Contact, _CONTACT_FIELDS, list(chunk.values()))
    stats["imported"] += inserted
    stats["merged"] += len(chunk) - inserted
    chunk.clear()


def opt_out(host, list_name: str, address: str) -> bool:
    """Opt EMAIL out of one list. Returns False when it already was."""
    mlist = get_list(host, list_name)
    norm = emails.normalize(address)
    with host.transaction():
        contact = Contact.get_or_none((Contact.mailing_list == mlist) & (Contact.email_normalized == norm))
        if contact is None:
            raise NotFound(f"{norm} is not on the list {mlist.name!r}")
        if contact.opt_out:
            return False
        Contact.update(opt_out=True, opt_out_at=host.clock.now()).where(Contact.id == contact.id).execute()
    host.log.info("list %s: %s opted out", mlist.name, norm)
    return True


def list_summary(mlist: MailingList) -> dict:
    """Counts of one list in one query."""
    blacklisted = Contact.email_normalized.in_(Blacklist.select(Blacklist.email_normalized))
    row = (Contact.select(pw.fn.COUNT(Contact.id),
                          pw.fn.SUM(pw.Case(None, [(Contact.opt_out, 1)], 0)),
                          pw.fn.SUM(pw.Case(None, [(blacklisted, 1)], 0)))
           .where(Contact.mailing_list == mlist).tuples().first())
    total, opted, black = row or (0, 0, 0)
    return {"id": mlist.id, "name": mlist.name, "contacts": total or 0, "opted_out": opted or 0,
            "blacklisted": black or 0, "created_at": mlist.created_at}


def list_contacts(mlist: MailingList, limit: int) -> list[dict]:
    blacklisted = Blacklist.select(Blacklist.email_normalized)
    query = (Contact.select(Contact.id, Contact.name, Contact.email_normalized, Contact.opt_out,
                            Contact.email_normalized.in_(blacklisted).alias("blacklisted"))
             .where(Contact.mailing_list == mlist).order_by(Contact.id).limit(limit).dicts())
    return [{"id": c["id"], "email": c["email_normalized"], "name": c["name"],
             "opted_out": bool(c["opt_out"]), "blacklisted": bool(c["blacklisted"])} for c in query]


def all_lists() -> list[dict]:
    return [list_summary(m) for m in MailingList.select().order_by(MailingList.name)]


# --- blacklist ---------------------------------------------------------------------

def blacklist_add(host, address: str, reason: str = "") -> bool:
    """Put an address on the blacklist; False when it already was."""
    norm = emails.normalize(address)
    reason = (reason or "added by the operator").strip()
    emails.check_header_text("reason", reason)
    with host.transaction():
        added = (Blacklist.insert(email_normalized=norm, reason=reason, created_at=host.clock.now())
                 .on_conflict_ignore().as_rowcount().execute())
    if added:
        host.log.info("blacklist: %s added (%s)", norm, reason)
    return bool(added)


def blacklist_remove(host, address: str) -> None:
    norm = emails.normalize(address)
    with host.transaction():
        removed = Blacklist.delete().where(Blacklist.email_normalized == norm).execute()
    if not removed:
        raise NotFound(f"{norm} is not on the blacklist")
    host.log.info("blacklist: %s removed", norm)


def blacklist_rows() -> list[dict]:
    return [{"email": b.email_normalized, "reason": b.reason, "created_at": b.created_at}
            for b in Blacklist.select().order_by(Blacklist.email_normalized)]
