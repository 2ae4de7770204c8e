"""The text/plain part derived from HTML keeps what a reader needs: link targets, lists,
paragraphs; drops scripts and styles."""
from postroom.core.chatter import post_message
from postroom.core.html import to_text
from postroom.core.records import create_partner, create_record, follow


def test_a_link_keeps_its_target_after_its_words():
    assert to_text('<p>See <a href="https://shop.example/offers">our offers</a> today.</p>') == (
        "See our offers <https://shop.example/offers> today.")


def test_a_link_whose_words_are_its_address_is_not_repeated():
    assert to_text('<p><a href="https://x.org">https://x.org</a> or '
                   '<a href="mailto:help@x.org">help@x.org</a></p>') == "https://x.org or help@x.org"


def test_bulleted_and_numbered_lists_stay_lists():
    text = to_text("<ul><li>Apples</li><li>Pears <b>ripe</b></li></ul><ol><li>Pay</li><li>Ship</li></ol>")
    assert text.splitlines() == ["  * Apples", "  * Pears ripe", " 1. Pay", " 2. Ship"]


def test_paragraphs_and_line_breaks_are_kept_and_scripts_dropped():
    assert to_text("<script>alert(1)</script><style>p{}</style><p>Dear Ann,</p><p>line 1<br>line 2</p>") == (
        "Dear Ann,\n\nline 1\nline 2")


def test_entities_and_empty_input():
    assert to_text("<p>Caf&eacute; &amp; cr&egrave;me &lt;3</p>") == "Café & crème <3"
    assert to_text("") == "" and to_text("   ") == ""


def test_the_sent_text_part_carries_the_link_target(make_host, tmp_path):
    from tests.support.smtp import SMTPSink
    with SMTPSink() as sink:
        host = make_host(plugins=["mail_queue"], config={"smtp_host": sink.host, "smtp_port": sink.port})
        rec = create_record(host, "generic", "Offers")
        follow(host, rec, create_partner(host, "Ann", "ann@example.org"))
        post_message(host, rec, '<p>See <a href="https://shop.example/o">offers</a>:</p><ul><li>A</li></ul>',
                     body_is_html=True, author=create_partner(host, "Shop", "shop@example.com"))
        [r] = sink.wait_for(1)
    text = r.message.get_body(("plain",)).get_content()
    assert "See offers <https://shop.example/o>:" in text and "  * A" in text
