"""Named mail templates and notification layouts, kept in the database.

A named template (`template add`) has a subject and an HTML body that campaigns and
`mail send --template NAME --var key=value` render. A layout (`template set-layout MODEL
FILE`) wraps every email notification of a record type: the message's body, then a
footer naming the record and how to stop receiving it. Both are compiled when saved, so
one that does not compile is refused then, not when mail is due.
"""
from markupsafe import Markup

from . import templates
from .errors import InvalidInput, NotFound
from .models import Template

MAIL, LAYOUT = "mail", "layout"
MAX_NAME = 128

DEFAULT_LAYOUT = """{{ body }}
<hr>
<p style="font-size:small;color:#666">You receive this because you follow {{ record.name }}.
To stop receiving messages about {{ record.name }}, reply to this mail and ask to be removed
from its followers.</p>
"""
# What a layout may use: the message's body (safe HTML), the record and the message.
LAYOUT_NAMES = {"body", "record", "message"}


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME or any(c.isspace() or ord(c) < 32 for c in name):
        raise InvalidInput(f"template name must be 1-{MAX_NAME} characters without spaces, not {name!r}")
    return name


def _save(host, kind: str, name: str, subject: str, body: str) -> Template:
    now = host.clock.now()
    with host.transaction():
        row = Template.get_or_none((Template.kind == kind) & (Template.name == name))
        if row is None:
            return Template.create(kind=kind, name=name, subject=subject, body=body, created_at=now,
                                   updated_at=now)
        row.subject, row.body, row.updated_at = subject, body, now
        row.save()
        return row


def add(host, name: str, subject: str, body: str) -> Template:
    """Save (or replace) a named template; refused when it does not compile."""
    name = _name(name)
    templates.compile_template(host, subject, f"{name} subject", html=False)
    templates.compile_template(host, body, f"{name} body")
    return _save(host, MAIL, name, subject, body)


def get(host, name: str) -> Template:
    row = Template.get_or_none((Template.kind == MAIL) & (Template.name == (name or "").strip()))
    if row is None:
        raise NotFound(f"no template named {name!r}; see: postroom template list")
    return row


def listing() -> list[dict]:
    return [{"kind": t.kind, "name": t.name, "subject": t.subject, "updated_at": t.updated_at}
            for t in Template.select().order_by(Template.kind, Template.name)]


def remove(host, name: str) -> None:
    with host.transaction():
        if not Template.delete().where((Template.kind == MAIL) & (Template.name == name)).execute():
            raise NotFound(f"no template named {name!r}; see: postroom template list")


def render_mail(host, name: str, values: dict) -> tuple[str, str]:
    """(subject, body HTML) of a named template with these values; an unknown variable,
    a failing render or a hostile template is a TemplateFailure naming the line."""
    row = get(host, name)
    known = set(values)
    subject = templates.render(host, templates.compile_template(host, row.subject, f"{name} subject", known,
                                                                html=False), values, f"{name} subject")
    body = templates.render(host, templates.compile_template(host, row.body, f"{name} body", known),
                            values, f"{name} body")
    return subject.strip(), body


# --- notification layouts --------------------------------------------------------------

def set_layout(host, model: str, source: str) -> Template:
    """Replace the layout of record type `model`; refused when it does not compile or
    names something a layout does not offer."""
    from .records import check_model
    check_model(host, model)
    templates.compile_template(host, source, f"layout of {model}", LAYOUT_NAMES)
    return _save(host, LAYOUT, model, "", source)


def reset_layout(host, model: str) -> bool:
    with host.transaction():
        return bool(Template.delete().where((Template.kind == LAYOUT) & (Template.name == model)).execute())


def layout_source(model: str | None) -> str:
    row = Template.get_or_none((Template.kind == LAYOUT) & (Template.name == model)) if model else None
    return row.body if row is not None else DEFAULT_LAYOUT


def notification_body(host, message, record) -> str:
    """The HTML an email notification of `message` carries: its record type's layout
    around the body (no layout without a record). Rendered once per message, whatever
    the number of recipients. A layout that fails at render time (it compiled when
    saved) falls back to the default one, logged, so the notification still leaves."""
    if record is None:
        return message.body
    context = {"body": Markup(message.body), "record": {"name": record.name, "model": record.model,
                                                        "id": record.id},
               "message": {"subject": message.subject or "", "author": message.email_from or ""}}
    source = layout_source(record.model)
    try:
        return templates.render_source(host, source, context, f"layout of {record.model}")
    except templates.TemplateFailure as exc:
        host.log.warning("notification layout of %s failed (%s); the default layout is used", record.model, exc)
        return templates.render_source(host, DEFAULT_LAYOUT, context, "default layout")
