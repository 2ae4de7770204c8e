"""A mail's given text part stored deflated against its own HTML.

An enqueuer that has the text part already (a personalised campaign renders one per
recipient) hands it with the HTML it was made from, so the two carry the same words: stored
as they are, the text nearly doubled the row. On SQLite that decided how many rows fit a
page: the bench's personalised mails (858 characters of HTML, 821 of text, 2.1 kB a row)
went one row a page against three for the same campaign unpersonalised, and every page is
written again when a mail is claimed and when it is deleted. Deflated with the HTML as its
dictionary the same text is 52 characters of base64 (4.2 us to pack, 2.4 us to read back)
and the row (1.4 kB) fits two a page: 2,507 pages for 5,000 such mails instead of 5,012
(the unpersonalised campaign's: 1,672).

A stored value is `PACKED` followed by base64 (raw deflate, the HTML's UTF-8 as the
dictionary), or the text as given; a text that itself starts with `PACKED` is always
packed, so reading back is never ambiguous.
"""
import binascii
import zlib

PACKED = "\x01deflate:"  # a control character first: no text part a person wrote starts so
_WBITS = -15  # raw deflate: no header, no checksum (the value is never read without its HTML)


def pack(body_html: str, body_text: str | None) -> str | None:
    """What `mail_queue_mail.body_text` stores for this text part (None stays None)."""
    if not body_text:
        return body_text
    # memLevel 1: the smallest hash tables; setting them up cost more than a mail's text
    # (5.8 -> 4.2 us, the same 38 bytes for the bench's text).
    packer = zlib.compressobj(1, zlib.DEFLATED, _WBITS, 1, zlib.Z_DEFAULT_STRATEGY,
                              (body_html or "").encode("utf-8", "surrogatepass")[-32768:])
    data = packer.compress(body_text.encode("utf-8", "surrogatepass")) + packer.flush()
    packed = PACKED + binascii.b2a_base64(data, newline=False).decode("ascii")
    if len(packed) < len(body_text) or body_text.startswith(PACKED):
        return packed
    return body_text


def unpack(body_html: str, stored: str | None) -> str | None:
    """The text part `pack` stored, exactly as it was given."""
    if not stored or not stored.startswith(PACKED):
        return stored
    reader = zlib.decompressobj(_WBITS, zdict=(body_html or "").encode("utf-8", "surrogatepass")[-32768:])
    data = reader.decompress(binascii.a2b_base64(stored[len(PACKED):])) + reader.flush()
    return data.decode("utf-8", "surrogatepass")
