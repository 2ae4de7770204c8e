"""Campaign subject and body rendered per recipient with the sandboxed templates of core.

What a campaign template sees: `contact.name`, `contact.email`, `campaign.subject` (the
subject as rendered for that recipient; the subject itself cannot use it), `campaign.id`,
`unsubscribe_url` (the signed web link when `public_url` is set, else the
signed mailto address) and whatever plugins add through `postroom_campaign_template_context`.
Templates are compiled once per source (core keeps them); each batch renders once the parts
that are the same for every recipient (a subject without names of the recipient's, say)
and, per recipient, only the others, all three parts reading one mapping of that
recipient's values. A recipient whose render fails gets an `error` trace with the reason
while the others go on.
"""
import dataclasses
import functools

import jinja2
import jinja2.nodes

from postroom.core import templates
from postroom.core.html import to_text

from .models import Contact

OWN_NAMES = ("contact", "campaign", "unsubscribe_url")
SAMPLE = {"name": "Sample Contact", "email": "contact@example.com"}


def extras(host, campaign) -> dict:
    merged = {}
    for result in host.hook.postroom_campaign_template_context(host=host, campaign=campaign) or ():
        merged.update({k: v for k, v in (result or {}).items() if k not in OWN_NAMES})
    return merged


@dataclasses.dataclass
class Compiled:
    """A campaign's templates for one batch. A part that reads nothing of a recipient's own
    (neither `contact` nor `unsubscribe_url`, no plugin value that is not plain data, and,
    for the body, `campaign` only when the subject is the same for all) is rendered here,
    once for the batch, and kept as its text (`static_*`); only the others render per
    recipient."""
    subject: object
    body: object
    extras: dict
    # The part as every recipient gets it, when it is the same for all of them.
    static_subject: str | None = None
    static_body: str | None = None
    # The text part as a template of its own (the HTML template turned into text once), so
    # no recipient's HTML has to be converted; None when that does not compile (or when
    # the body is static: the queue derives one text for the one body).
    text: object = None
    static_text: str | None = None
    renderer: templates.Renderer | None = None
    campaign_values: dict = dataclasses.field(default_factory=dict)


def _static(source: str) -> str | None:
    return None if any(mark in source for mark in ("{{", "{%", "{#")) else source


@functools.lru_cache(maxsize=64)
def _names_own_subject(source: str) -> int | None:
    """The line where a subject template reads `campaign.subject` (itself), else None.
    Called once the template compiled, so it parses."""
    tree = jinja2.Environment().parse(source)
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        target = node.node
        key = node.attr if isinstance(node, jinja2.nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(target, jinja2.nodes.Name) and target.name == "campaign" and key == "subject":
            return node.lineno
    return None


# The HTML template as text, once per body (lxml and inscriptis: milliseconds, per batch).
_text_source = functools.lru_cache(maxsize=32)(to_text)

_PLAIN_LEAVES = (str, int, float, bool, type(None))


def _plain(value, depth: int = 0) -> bool:
    """Whether a plugin's value is plain data (strings, numbers, lists and dicts of them),
    whose rendering cannot change from one recipient to the next; a callable or an object
    of the plugin's own might (a coupon code made per call), so a template using it is
    rendered for every recipient."""
    if type(value) in _PLAIN_LEAVES:
        return True
    if depth > 10:
        return False
    if type(value) is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(_plain(v, depth + 1) for v in value)
    return False


def compile_campaign(host, campaign, subject: str | None = None, body: str | None = None) -> Compiled:
    """Both templates compiled against the names a campaign offers (TemplateFailure, with
    the line, for a syntax error, an unknown name, or a subject that reads itself), and
    the parts that are the same for every recipient rendered (TemplateFailure when that
    fails: it would fail for every recipient)."""
    extra = extras(host, campaign)
    known = set(OWN_NAMES) | set(extra)
    subject = campaign.subject if subject is None else subject
    body = campaign.body_html if body is None else body
    compiled_subject = templates.compile_template(host, subject, "subject", known, html=False)
    line = _names_own_subject(subject)
    if line is not None:
        raise templates.TemplateFailure(f"template subject, line {line}: the subject cannot use "
                                        f"campaign.subject (it is the subject being rendered)")
    compiled = Compiled(compiled_subject,
                        templates.compile_template(host, body, "body", known), extra,
                        _static(subject), _static(body))
    compiled.renderer = templates.Renderer(host, extra)
    compiled.campaign_values = {"id": campaign.id}
    # Names whose values are the same for every recipient of this batch.
    shared = {"range"} | {k for k, v in extra.items() if _plain(v)}
    if compiled.static_subject is None and templates.names_in(subject) <= shared | {"campaign"}:
        compiled.static_subject = _render_once(compiled, compiled.subject, "subject")
    if compiled.static_subject is not None:
        compiled.static_subject = " ".join(compiled.static_subject.split())
        compiled.campaign_values = {"subject": compiled.static_subject, "id": campaign.id}
        shared = shared | {"campaign"}  # the body's campaign.subject is the same for all too
    if compiled.static_body is None and templates.names_in(body) <= shared:
        compiled.static_body = _render_once(compiled, compiled.body, "body")
    if compiled.static_body is None:
        text_source = _text_source(body)
        try:
            compiled.text = templates.compile_template(host, text_source, "text", known, html=False)
        except templates.TemplateFailure:
            compiled.text = None  # tags split by markup: each recipient's HTML is converted instead
        if compiled.text is not None and templates.names_in(text_source) <= shared:
            compiled.static_text = _render_once(compiled, compiled.text, "body")
    return compiled


def _render_once(compiled: Compiled, template, label: str) -> str:
    """A part that reads only values shared by the batch, rendered for all recipients."""
    return compiled.renderer.render(template, compiled.renderer.namespace(campaign=compiled.campaign_values), label)


def render(host, compiled: Compiled, campaign, name, email, unsubscribe_url: str) -> tuple[str, str, str | None]:
    """(subject, body HTML, text or None) for one recipient; TemplateFailure when it
    cannot render. The text is None when it is to be derived from the HTML."""
    subject, body, text = compiled.static_subject, compiled.static_body, compiled.static_text
    if subject is not None and body is not None:
        return subject, body, None
    renderer = compiled.renderer
    # One namespace for the recipient's renders (not one dict per template).
    namespace = renderer.namespace(contact={"name": name or "", "email": email or ""},
                                   campaign=compiled.campaign_values, unsubscribe_url=unsubscribe_url)
    if subject is None:
        subject = " ".join(renderer.render(compiled.subject, namespace, "subject").split())
        # The body sees the subject this recipient gets, not the subject's template.
        namespace["campaign"] = {"subject": subject, "id": campaign.id}
    if body is None:
        body = renderer.render(compiled.body, namespace, "body")
        if text is None and compiled.text is not None:
            text = renderer.render(compiled.text, namespace, "body")
    return subject, body, text


def sample_contact(list_ids, address: str | None = None) -> dict:
    """A real contact to check a template against: the one with `address` in the lists,
    else the first of the lists, else a sample."""
    query = Contact.select(Contact.name, Contact.email).where(Contact.mailing_list.in_(list_ids or [0]))
    row = None
    if address:
        row = query.where(Contact.email == address).first()
    row = row or query.order_by(Contact.id).first()
    return {"name": row.name, "email": row.email} if row is not None else dict(SAMPLE)


def check(host, campaign, subject: str, body: str, list_ids, address: str | None = None) -> None:
    """Refuse (TemplateFailure) templates that do not compile, name an unknown variable,
    or fail to render for a real contact of the campaign's lists."""
    compiled = compile_campaign(host, campaign, subject, body)
    contact = sample_contact(list_ids, address)
    render(host, compiled, campaign, contact["name"], contact["email"], "mailto:unsubscribe@example.com")
