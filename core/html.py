"""Keeping message bodies safe: plain text becomes escaped HTML; HTML is allow-listed."""
import html
from html.parser import HTMLParser

ALLOWED = {"a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "i", "img",
           "li", "ol", "p", "pre", "span", "strong", "table", "tbody", "td", "th", "thead", "tr",
           "u", "ul", "hr", "font", "small", "sup", "sub"}
DROP_CONTENT = {"script", "style", "head", "title", "iframe", "object", "embed"}
ALLOWED_ATTRS = {"href", "src", "alt", "title", "colspan", "rowspan", "style", "class"}
VOID = {"br", "img", "hr"}


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
    """HTML → readable plain text (for text/plain parts and terminal display)."""
    class _Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts, self.skip = [], 0

        def handle_starttag(self, tag, attrs):
            if tag in DROP_CONTENT:
                self.skip += 1
            elif tag in ("br",):
                self.parts.append("\n")
            elif tag in ("p", "div", "tr", "li", "h1", "h2", "h3", "h4"):
                self.parts.append("\n\n" if tag in ("p", "h1", "h2", "h3", "h4") else "\n")
            if tag == "li":
                self.parts.append("- ")

        def handle_endtag(self, tag):
            if tag in DROP_CONTENT:
                self.skip = max(0, self.skip - 1)

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)
    parser = _Text()
    parser.feed(markup or "")
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()
