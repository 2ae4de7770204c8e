"""core.emails reads addresses as it always did: its shortcuts are pinned to the full path."""

import pytest

from postroom.core import emails
from postroom.core.errors import InvalidInput


def _split_address_in_full(text):
    """split_address without its shortcut for an address the pattern takes whole."""
    if text is None or not text.strip():
        raise InvalidInput("missing email address")
    emails.check_header_text("email address", text)
    return emails._split_checked(text.strip())


ADDRESSES = ["ann@example.org", "  Ann@Example.ORG ", "ann@example.org\n", "ann@exa\x01mple.org",
             "an\x7fn@example.org", "ann@example", "ann@-example.org", "ann@example.o", "ann.b+x@sub.example.co.uk",
             "ann@bücher.example", "jörg@example.org", "Ann <ann@example.org>", '"Ann, B" <ann@example.org>',
             "ann@example.org, bob@example.org", "ann@@example.org", "ann@example.org>", "<ann@example.org>",
             "a b@example.org", "ann@example.org;", "ann(comment)@example.org", "", "   ", None,
             "x" * 300 + "@example.org", "ann@" + "a" * 64 + ".org", "ann@xn--bcher-kva.example"]


@pytest.mark.parametrize("text", ADDRESSES)
def test_an_address_splits_as_the_full_path_splits_it(text):
    try:
        expected = _split_address_in_full(text)
    except InvalidInput as exc:
        with pytest.raises(InvalidInput) as got:
            emails.split_address(text)
        assert str(got.value) == str(exc)
    else:
        assert emails.split_address(text) == expected
