"""Partners and records: creating, finding, importing, following."""
import csv
import dataclasses
import io

from . import emails
from .db import chunks, insert_one, select_first, setup_lock
from .errors import Conflict, InvalidInput, NotFound
from .models import Follower, Parameter, Partner, Record

TEMPORARY_ADMIN_EMAIL = "admin@example.invalid"
ADMIN_PARAM = "core.admin_partner_id"


@dataclasses.dataclass(frozen=True)
class RecordType:
    """A kind of record with a chatter, named like Odoo models (`helpdesk.ticket`)."""
    name: str
    label: str = ""
    defaults: dict = dataclasses.field(default_factory=dict)
    # Values whose changes `update_record` posts on the chatter (Odoo's tracking).
    tracked: tuple = ()
    # The author of a post, and the sender of mail that opened a record, follow it.
    auto_follow: bool = True


# --- partners ----------------------------------------------------------------------

def find_partner(host, address: str, required: bool = True) -> Partner | None:
    """The active partner with this address (normalised match), or NotFound."""
    norm = emails.normalize(address)
    # Written directly: the inbound gateway asks this for every message it stores.
    partner = select_first(Partner, 'SELECT * FROM "partner" WHERE "email_normalized" = {p} '
                                    'ORDER BY "active" DESC, "id" LIMIT 1', (norm,))
    if partner is None and required:
        raise NotFound(f"no partner with email {norm}; add one with: postroom partner add NAME {norm}")
    return partner


def create_partner(host, name: str, address: str, inbox: bool = False) -> Partner:
    """A new partner; refused when the address is invalid or already taken."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("partner name is empty")
    emails.check_header_text("partner name", name)
    display, addr = emails.split_address(address)
    with host.transaction():
        existing = find_partner(host, addr, required=False)
        if existing is not None:
            raise Conflict(f"a partner with email {addr.lower()} already exists (id {existing.id})")
        return Partner.create(name=name, email=addr, email_normalized=addr.lower(),
                              notification_type="inbox" if inbox else "email",
                              created_at=host.clock.now())


def _csv_rows(reader):
    """(line number, row) pairs; a row csv cannot read (a field over its 128 KB limit,
    broken quoting) refuses the whole file in one line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"CSV line {reader.line_num}: {exc}; nothing was imported") from None
        yield reader.line_num, row


def import_partners(host, text: str) -> dict:
    """Import `name,email` CSV rows in one transaction. Any bad row refuses the whole file
    (with every bad line number), so nothing is half-imported. Addresses that already
    belong to a partner, or repeat within the file, are skipped and counted."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "name" not in fields or "email" not in fields:
        raise InvalidInput("CSV must have a header row with the columns name,email")
    reader.fieldnames = fields
    rows, errors, seen = [], [], set()
    for line, row in _csv_rows(reader):
        name = (row.get("name") or "").strip()
        address = (row.get("email") or "").strip()
        try:
            if not name:
                raise InvalidInput("name is empty")
            emails.check_header_text("name", name)
            norm = emails.normalize(address)
        except InvalidInput as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if norm in seen:
            continue
        seen.add(norm)
        rows.append((name, emails.split_address(address)[1], norm))
    if errors:
        shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise InvalidInput(f"{len(errors)} bad row(s), nothing imported: {shown}")
    now = host.clock.now()
    with host.transaction():
        taken = set()
        norms = [r[2] for r in rows]
        for chunk in chunks(norms):
            taken.update(p.email_normalized for p in
                         Partner.select(Partner.email_normalized).where(Partner.email_normalized.in_(chunk)))
        new = [{"name": n, "email": e, "email_normalized": m, "notification_type": "email",
                "created_at": now} for n, e, m in rows if m not in taken]
        for chunk in chunks(new):
            Partner.insert_many(chunk).execute()
    return {"imported": len(new), "skipped": len(rows) - len(new)}


def admin_partner(host) -> Partner | None:
    row = Parameter.get_or_none(Parameter.key == ADMIN_PARAM)
    return Partner.get_or_none(Partner.id == int(row.value)) if row else None


def ensure_admin(host, address: str | None = None) -> tuple[Partner, bool]:
    """Create the admin partner once (with a temporary address unless given). Returns
    (partner, created); running it again changes nothing."""
    with host.transaction():
        # Several `postroom init` at once: on PostgreSQL the second waits here and then sees
        # the first one's admin (SQLite's write lock, taken at BEGIN, does the same).
        setup_lock(host)
        admin = admin_partner(host)
        if admin is not None:
            return admin, False
        addr = emails.split_address(address)[1] if address else TEMPORARY_ADMIN_EMAIL
        admin = Partner.create(name="Administrator", email=addr, email_normalized=addr.lower(),
                               notification_type="email", created_at=host.clock.now())
        Parameter.create(key=ADMIN_PARAM, value=str(admin.id))
        return admin, True


def set_admin_email(host, address: str) -> Partner:
    _, addr = emails.split_address(address)
    with host.transaction():
        admin = admin_partner(host)
        if admin is None:
            raise NotFound("no admin partner yet; run: postroom init")
        admin.email, admin.email_normalized = addr, addr.lower()
        admin.save()
    return admin


def admin_has_temporary_email(host) -> bool:
    admin = admin_partner(host)
    return admin is not None and admin.email_normalized == TEMPORARY_ADMIN_EMAIL


# --- records -----------------------------------------------------------------------

MAX_ID = 2**63 - 1  # the largest row id SQLite and PostgreSQL (bigint) hold


def parse_id(value, what: str) -> int:
    """An id typed by an operator, as a number, or InvalidInput naming what it was for."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} id must be a number, not {value!r}") from None
    if not 0 < number <= MAX_ID:
        raise InvalidInput(f"{what} id {value} is out of range (ids are 1 to {MAX_ID})")
    return number


def get_by_id(model, value, what: str):
    """The `model` row whose id an operator typed, or NotFound ("no message with id 7")."""
    row_id = parse_id(value, what)
    row = model.get_or_none(model.id == row_id)
    if row is None:
        raise NotFound(f"no {what} with id {row_id}")
    return row


def check_model(host, model: str) -> RecordType:
    if model not in host.record_types:
        known = ", ".join(sorted(host.record_types))
        raise NotFound(f"unknown record type {model!r}; known types: {known}")
    return host.record_types[model]


def create_record(host, model: str, name: str, values: dict | None = None) -> Record:
    rtype = check_model(host, model)
    name = (name or "").strip()
    if not name:
        raise InvalidInput("record name is empty")
    data = dict(rtype.defaults)
    data.update(values or {})
    with host.transaction(join=True):
        values = {"model": model, "name": name, "values": data or None, "created_at": host.clock.now()}
        record = Record(**values)
        # Written directly: every mail to an alias creates a record (see db.insert_one).
        record.id = insert_one(host.db, Record, values)
        host.hook.postroom_record_created(host=host, record=record, values=data)
    host.log.info("record %s,%s created: %s", model, record.id, name)
    return record


def get_record(host, model: str, res_id) -> Record:
    check_model(host, model)
    res_id = parse_id(res_id, "record")
    record = Record.get_or_none((Record.id == res_id) & (Record.model == model))
    if record is None:
        raise NotFound(f"no {model} record with id {res_id}")
    return record


def follow(host, record: Record, partner: Partner, subtypes=None) -> bool:
    """Make `partner` follow `record`; False if it already did. `subtypes`: the names it
    subscribes to (None: the defaults); given for an existing follower, they replace its
    subset."""
    from . import subtypes as subtype_registry
    chosen = subtype_registry.encode(host, subtypes)
    with host.transaction():
        inserted = (Follower.insert(record=record, partner=partner, subtypes=chosen)
                    .on_conflict_ignore().as_rowcount().execute())
        if not inserted and subtypes is not None:
            (Follower.update(subtypes=chosen)
             .where((Follower.record == record) & (Follower.partner == partner)).execute())
    return bool(inserted)


def unfollow(host, record: Record, partner: Partner) -> bool:
    """Stop `partner` following `record`; False if it did not."""
    with host.transaction():
        removed = (Follower.delete().where((Follower.record == record) & (Follower.partner == partner))
                   .execute())
    return bool(removed)
