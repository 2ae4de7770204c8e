"""The attachment store: metadata rows plus content-addressed files, like Odoo's filestore.

Content lives under `data_dir/filestore/ab/abcdef…` (its sha256), stored once however many
messages, mails or campaigns attach it. Writing is crash-safe and never leaves a row
pointing at a missing file:

- the content row (`AttachmentContent`) is upserted first, inside the caller's
  transaction, which locks it (the row on PostgreSQL, the database on SQLite) against a
  vacuum removing the same checksum at that moment;
- then the file is written if it is not there: temp file in the same folder, fsync,
  rename, fsync of the folder;
- then the attachment row; all commit together. A crash before the commit leaves at most
  a file no row names, never the reverse.

The vacuum (`collect_garbage`) removes content rows no attachment references, and their
files, in chunks: it locks the rows it removes (SKIP LOCKED on PostgreSQL) and unlinks the
files before its transaction commits, so a writer of the same checksum waits for it and
then writes the file again. Attachments themselves are removed by whoever owns them
(`remove_orphans` for a plugin's own rows), so content a queued mail still uses stays.
"""
import datetime as dt
import hashlib
import mimetypes
import os
import tempfile

import peewee as pw

from .db import delete_chunk, is_postgres
from .errors import InvalidInput, NotFound
from .models import Attachment, AttachmentContent
from .records import get_by_id

DEFAULT_MAX_SIZE = 25 * 1024 * 1024
MAX_NAME = 255
# Content younger than this is never collected: a writer that created its content row in
# a transaction still open elsewhere has not written its attachment row yet.
GRACE_SECONDS = 3600
READ_CHUNK = 1 << 20


def max_size(host) -> int:
    """`attachment_max_size` in bytes (default 25 MB)."""
    size = host.config.getint("attachment_max_size", DEFAULT_MAX_SIZE)
    if size < 1:
        raise InvalidInput(f"config key 'attachment_max_size' must be at least 1, not {size}")
    return size


def store_dir(host) -> str:
    return os.path.join(host.config.path_of("data_dir"), "filestore")


def path_of(host, checksum: str) -> str:
    return os.path.join(store_dir(host), checksum[:2], checksum)


def clean_name(name: str) -> str:
    """A file name as a mail may carry it: no folders, no control characters, bounded."""
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    if not base or base in (".", ".."):
        raise InvalidInput(f"attachment name {name!r} is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in base):
        raise InvalidInput(f"attachment name {name!r} contains a control character")
    if len(base) > MAX_NAME:
        raise InvalidInput(f"attachment name is longer than {MAX_NAME} characters: {base[:40]}…")
    return base


def guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def check_mimetype(mimetype: str) -> str:
    main, _, sub = (mimetype or "").partition("/")
    token = set("!#$&^_.+-") | set("abcdefghijklmnopqrstuvwxyz0123456789")
    if not main or not sub or not set(mimetype.lower()) - {"/"} <= token:
        raise InvalidInput(f"not a MIME type: {mimetype!r} (e.g. application/pdf)")
    return mimetype.lower()


def read_file(host, path: str) -> tuple[str, bytes, str]:
    """(name, bytes, mimetype) of a file given by an operator, or one clear InvalidInput:
    missing, a directory, unreadable, or over `attachment_max_size`."""
    limit = max_size(host)
    if not os.path.exists(path):
        raise InvalidInput(f"attachment {path}: no such file")
    if os.path.isdir(path):
        raise InvalidInput(f"attachment {path}: is a directory, not a file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"attachment {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise InvalidInput(f"attachment {path} is larger than attachment_max_size ({limit} bytes)")
    name = clean_name(os.path.basename(path))
    return name, data, guess_type(name)


def prepare(host, items) -> list[tuple[str, bytes, str, str | None]]:
    """Validate what a caller wants to attach, before anything is written. Each item is a
    path (str or os.PathLike), `(name, bytes, mimetype)` (mimetype may be None: guessed
    from the name) or `(name, bytes, mimetype, content_id)` for an inline part. Returns
    `(name, bytes, mimetype, content_id)` tuples for `store`."""
    limit = max_size(host)
    ready = []
    for item in items or ():
        if isinstance(item, (str, os.PathLike)):
            ready.append(read_file(host, os.fspath(item)) + (None,))
            continue
        if not (isinstance(item, (tuple, list)) and len(item) in (2, 3, 4)):
            raise InvalidInput("an attachment is a path or (name, bytes, mimetype)")
        name, data = clean_name(item[0]), item[1]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"attachment {name}: content must be bytes")
        data = bytes(data)
        if len(data) > limit:
            raise InvalidInput(f"attachment {name} is larger than attachment_max_size ({limit} bytes)")
        mimetype = check_mimetype(item[2]) if len(item) >= 3 and item[2] else guess_type(name)
        content_id = item[3] if len(item) == 4 and item[3] else None
        if content_id is not None and (len(content_id) > MAX_NAME or
                                       any(ord(c) < 33 or ord(c) > 126 for c in content_id)):
            raise InvalidInput(f"attachment {name}: bad Content-ID {content_id[:40]!r}")
        ready.append((name, data, mimetype, content_id))
    return ready


def _write_file(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _store_content(host, data: bytes) -> str:
    """Upsert the content row (taking its lock), then make sure the file is there."""
    checksum = hashlib.sha256(data).hexdigest()
    now = host.clock.now()
    (AttachmentContent.insert(checksum=checksum, size=len(data), last_used_at=now)
     .on_conflict(conflict_target=[AttachmentContent.checksum],
                  update={AttachmentContent.last_used_at: now})
     .execute())
    path = path_of(host, checksum)
    try:
        present = os.path.getsize(path) == len(data)
    except OSError:
        present = False
    if not present:
        _write_file(path, data)
    return checksum


def store(host, items, res_model: str | None, res_id: int | None) -> list[Attachment]:
    """Store `prepare`d items for one holder, inside the caller's transaction (or one of its
    own). Returns the attachment rows."""
    rows = []
    with host.transaction():
        for name, data, mimetype, content_id in items:
            checksum = _store_content(host, data)
            rows.append(Attachment.create(name=name, mimetype=mimetype, size=len(data),
                                          content=checksum, res_model=res_model, res_id=res_id,
                                          content_id=content_id, created_at=host.clock.now()))
    return rows


def of(res_model: str, res_id: int) -> list[Attachment]:
    """The attachments a holder carries, in the order they were added."""
    return list(Attachment.select().where((Attachment.res_model == res_model)
                                          & (Attachment.res_id == res_id)).order_by(Attachment.id))


def by_ids(ids) -> list[Attachment]:
    ids = [int(i) for i in ids or ()]
    found = {a.id: a for a in Attachment.select().where(Attachment.id.in_(ids))} if ids else {}
    return [found[i] for i in ids if i in found]


def get(host, attachment_id) -> Attachment:
    return get_by_id(Attachment, attachment_id, "attachment")


def content(host, attachment: Attachment) -> bytes:
    """The exact bytes of an attachment (checked against its checksum)."""
    return read_content(host, attachment.checksum, f"attachment {attachment.id}")


def read_content(host, checksum: str, label: str = "attachment") -> bytes:
    """The stored bytes with this checksum; NotFound when the file store lost them."""
    try:
        with open(path_of(host, checksum), "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise NotFound(f"{label}: its content {checksum[:12]}… is missing from the file store "
                       f"({exc.strerror})") from None
    if hashlib.sha256(data).hexdigest() != checksum:
        raise InvalidInput(f"{label}: the stored content does not match its checksum")
    return data


def export(host, attachment_id, target: str) -> tuple[Attachment, str]:
    """Write an attachment's bytes to `target` (a file, or a folder to write its name in)."""
    row = get(host, attachment_id)
    data = content(host, row)
    path = os.path.join(target, row.name) if os.path.isdir(target) else target
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return row, path


def describe(rows) -> list[dict]:
    return [{"id": a.id, "name": a.name, "mimetype": a.mimetype, "size": a.size,
             "content_id": a.content_id, "checksum": a.checksum} for a in rows]


# --- garbage collection (the vacuum) -------------------------------------------------

def _unreferenced(host):
    cutoff = host.clock.now() - dt.timedelta(seconds=GRACE_SECONDS)
    used = Attachment.select(pw.SQL("1")).where(Attachment.content == AttachmentContent.checksum)
    return (AttachmentContent.last_used_at < cutoff) & ~pw.fn.EXISTS(used)


def collect_garbage(host, batch_size: int, dry_run: bool) -> tuple[int, int]:
    """Remove up to `batch_size` unreferenced contents (rows and files), inside the
    caller's transaction. Returns (removed, remaining) with remaining 1 while more match."""
    condition = _unreferenced(host)
    if dry_run:
        return AttachmentContent.select().where(condition).count(), 0
    query = (AttachmentContent.select(AttachmentContent.checksum).where(condition)
             .order_by(AttachmentContent.checksum).limit(batch_size + 1))
    if is_postgres(host.db):
        query = query.for_update(skip_locked=True)
    found = [r[0] for r in query.tuples()]
    chunk = found[:batch_size]
    if chunk:
        # The rows are locked (PostgreSQL) or the database is (SQLite): nobody attached
        # them since the select, so the files go with the rows, before the commit.
        AttachmentContent.delete().where(AttachmentContent.checksum.in_(chunk)).execute()
        for checksum in chunk:
            try:
                os.unlink(path_of(host, checksum))
            except FileNotFoundError:
                pass
    return len(chunk), 1 if len(found) > batch_size else 0


def remove_orphans(res_model: str, holders, batch_size: int) -> tuple[int, int]:
    """Delete up to `batch_size` attachments of `res_model` whose holder is gone: `holders`
    is a query selecting the ids of the holders that still exist. For a plugin's vacuum."""
    condition = (Attachment.res_model == res_model) & Attachment.res_id.not_in(holders)
    removed, remaining, _ = delete_chunk(Attachment, condition, batch_size)
    return removed, remaining
