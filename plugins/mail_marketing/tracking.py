"""Open and click tracking of a campaign (off unless the campaign asks: a privacy choice).

Each recipient's body gets its links rewritten to `PUBLIC/c/TOKEN` and an open pixel
`PUBLIC/o/TOKEN`. A click token carries the trace and the link's position among the
campaign body's links, signed for that purpose: the redirect goes only to that link of
that campaign, so no token can send anyone elsewhere (no open redirect). The first open
and the first click are written on the trace; later ones change nothing.
"""
import html
import re

from postroom.core import tokens
from postroom.core.errors import InvalidInput

from .models import Campaign, Trace

KINDS = ("opens", "clicks")
CLICK_PURPOSE = "mail_marketing.click"
OPEN_PURPOSE = "mail_marketing.open"
# href="http(s)://..." of an <a> element (either quote style).
_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'<>\s]+)\2""", re.IGNORECASE)
_CLICK_VALUE = re.compile(r"^t(\d+)l(\d+)$")
PIXEL_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00"
             b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def parse_track(text: str | None) -> str:
    """`--track opens,clicks` checked and normalised ("" for none)."""
    wanted = [w.strip().lower() for w in (text or "").replace(" ", ",").split(",") if w.strip()]
    unknown = [w for w in wanted if w not in KINDS]
    if unknown:
        raise InvalidInput(f"--track takes opens and/or clicks, not {', '.join(unknown)}")
    return ",".join(k for k in KINDS if k in wanted)


def links(body_html: str) -> list[str]:
    """The distinct http(s) links of a body, in order of first appearance, unescaped."""
    seen = []
    for match in _LINK.finditer(body_html or ""):
        url = html.unescape(match.group(3))
        if url not in seen:
            seen.append(url)
    return seen


def personalise(host, campaign, trace_id: int, base: str, body: str | None = None) -> str:
    """The body for one recipient (`body`, rendered; default the campaign's): links through
    the click endpoint, plus the open pixel."""
    body = campaign.body_html if body is None else body
    track = set((campaign.track or "").split(","))
    if "clicks" in track:
        index = {url: i for i, url in enumerate(links(body))}

        def rewrite(match):
            token = tokens.sign(host, CLICK_PURPOSE, f"t{trace_id}l{index[html.unescape(match.group(3))]}")
            return f"{match.group(1)}{match.group(2)}{base}/c/{token}{match.group(2)}"
        body = _LINK.sub(rewrite, body)
    if "opens" in track:
        pixel = (f'<img src="{base}/o/{tokens.sign(host, OPEN_PURPOSE, f"t{trace_id}")}" width="1" '
                 f'height="1" alt="" style="display:block;border:0">')
        at = body.lower().rfind("</body>")
        body = body[:at] + pixel + body[at:] if at >= 0 else body + pixel
    return body


def click_target(host, token: str) -> str | None:
    """Record the first click (and open) of a genuine click token; its link, else None."""
    value = tokens.verify(host, CLICK_PURPOSE, token) if token and len(token) <= 64 else None
    match = _CLICK_VALUE.match(value or "")
    if match is None:
        return None
    trace_id, index = int(match.group(1)), int(match.group(2))
    campaign = (Campaign.select(Campaign.body_html).join(Trace, on=(Trace.campaign == Campaign.id))
                .where(Trace.id == trace_id).first())
    targets = links(campaign.body_html) if campaign else []
    if index >= len(targets):
        return None
    now = host.clock.now()
    with host.transaction():
        Trace.update(clicked_at=now).where((Trace.id == trace_id) & Trace.clicked_at.is_null()).execute()
        Trace.update(opened_at=now).where((Trace.id == trace_id) & Trace.opened_at.is_null()).execute()
    return targets[index]


def record_open(host, token: str) -> bool:
    """Record the first open of a genuine open token; False for a forged one."""
    value = tokens.verify(host, OPEN_PURPOSE, token) if token and len(token) <= 64 else None
    if not value or not value.startswith("t") or not value[1:].isdigit():
        return False
    with host.transaction():
        (Trace.update(opened_at=host.clock.now())
         .where((Trace.id == int(value[1:])) & Trace.opened_at.is_null()).execute())
    return True
