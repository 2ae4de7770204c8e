"""Campaign subject and body rendered per recipient with the sandboxed templates of core.

What a campaign template sees: `contact.name`, `contact.email`, `campaign.subject` (the
subject as rendered for that recipient; the subject itself cannot use it), `campaign.id`,
`unsubscribe_url` (the signed web link when `public_url` is set, else the
signed mailto address) and whatever plugins add through `postroom_campaign_template_context`.
Templates are compiled once per batch; a recipient whose render fails gets an `error` trace
with the reason while the others go on.
"""
import dataclasses

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
    subject: object
    body: object
    extras: dict
    # The source itself when it has no template syntax: nothing to render per recipient.
    static_subject: str | None = None
    static_body: str | None = None
    # The text part as a template of its own (the HTML template turned into text once), so
    # no recipient's HTML has to be converted; None when that does not compile.
    text: object = None


def _static(source: str) -> str | None:
    return None if any(mark in source for mark in ("{{", "{%", "{#")) else source


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


def compile_campaign(host, campaign, subject: str | None = None, body: str | None = None) -> Compiled:
    """Both templates compiled against the names a campaign offers (TemplateFailure, with
    the line, for a syntax error, an unknown name, or a subject that reads itself)."""
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
    if compiled.static_body is None:
        try:
            compiled.text = templates.compile_template(host, to_text(body), "text", known, html=False)
        except templates.TemplateFailure:
            compiled.text = None  # tags split by markup: each recipient's HTML is converted instead
    return compiled


def render(host, compiled: Compiled, campaign, name, email, unsubscribe_url: str) -> tuple[str, str, str | None]:
    """(subject, body HTML, text or None) for one recipient; TemplateFailure when it
    cannot render. The text is None when it is to be derived from the HTML."""
    context = dict(compiled.extras)
    context.update(contact={"name": name or "", "email": email or ""},
                   campaign={"id": campaign.id}, unsubscribe_url=unsubscribe_url)
    subject = compiled.static_subject
    if subject is None:
        subject = templates.render(host, compiled.subject, context, "subject")
    subject = " ".join(subject.split())
    # The body sees the subject this recipient gets, not the subject's template.
    context["campaign"] = {"subject": subject, "id": campaign.id}
    body = compiled.static_body
    text = None
    if body is None:
        body = templates.render(host, compiled.body, context, "body")
        if compiled.text is not None:
            text = templates.render(host, compiled.text, context, "body")
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
