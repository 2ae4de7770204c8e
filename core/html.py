"""Keeping message bodies safe (plain text becomes escaped HTML; HTML is allow-listed), and
turning HTML back into the text a text/plain part carries."""
import html
import re
from html.parser import HTMLParser

import lxml.etree
import lxml.html
from inscriptis import Inscriptis
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

ALLOWED = {"a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "i", "img",
           "li", "ol", "p", "pre", "span", "strong", "table", "tbody", "td", "th", "thead", "tr",
           "u", "ul", "hr", "font", "small", "sup", "sub"}
DROP_CONTENT = {"script", "style", "head", "title", "iframe", "object", "embed"}
ALLOWED_ATTRS = {"href", "src", "alt", "title", "colspan", "rowspan", "style", "class"}
VOID = {"br", "img", "hr"}
# "strict" keeps the layout to what the markup says (no indentation guessed from CSS).
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"])


def text_to_html(text: str) -> str:
    """Plain text → paragraphs of escaped HTML."""
    paragraphs = [p for p in (text or "").replace("\r\n", "\n").split("\n\n")]
    return "".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs if p.strip())


class _Sanitizer(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in DROP_CONTENT:
            self.skip += 1
            return
        if self.skip or tag not in ALLOWED:
            return
        kept = []
        for key, value in attrs:
            value = value or ""
            if key not in ALLOWED_ATTRS:
                continue
            if key in ("href", "src") and value.strip().lower().startswith(("javascript:", "vbscript:", "data:text")):
                continue
            if key == "style" and ("expression" in value.lower() or "url(" in value.lower()):
                continue
            kept.append(f' {key}="{html.escape(value, quote=True)}"')
        self.out.append(f"<{tag}{''.join(kept)}>")

    def handle_endtag(self, tag):
        if tag in DROP_CONTENT:
            self.skip = max(0, self.skip - 1)
            return
        if not self.skip and tag in ALLOWED and tag not in VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(html.escape(data, quote=False))


def sanitize(markup: str) -> str:
    """Keep harmless formatting, drop scripts, event handlers and unknown tags."""
    parser = _Sanitizer()
    parser.feed(markup or "")
    parser.close()
    return "".join(parser.out)


def to_text(markup: str) -> str:
    """HTML → readable plain text (the text/plain part of every mail, terminal display).

    inscriptis lays out paragraphs, lists (bullets and numbers) and tables as a browser
    would; before that, each link gets its target after its words (`our offers
    <https://…>`) unless the words already are the address, so nothing a reader must
    follow is lost in the text part."""
    if not (markup or "").strip():
        return ""
    try:
        tree = lxml.html.fragment_fromstring(markup, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return ""
    for link in tree.iter("a"):
        href = (link.get("href") or "").strip()
        if not href or href.startswith(("#", "javascript:", "cid:")):
            continue
        words = " ".join(link.text_content().split())
        if words in (href, href.removeprefix("mailto:")):
            continue
        link.tail = f" <{href}>" + (link.tail or "")
    text = Inscriptis(tree, _TEXT_CONFIG).get_text()
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
