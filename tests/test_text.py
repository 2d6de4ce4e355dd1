"""status_to_text: Mastodon status HTML -> plain ticket text; clean_text for every string a customer controls."""

from __future__ import annotations

import pytest

from mentiondesk.bot.mastodon.client import post_from_json
from mentiondesk.bot.mastodon.text import MentionRef, clean_text, status_to_text

BRAND = MentionRef(url="https://social.example/@brand", acct="brand")
ALICE = MentionRef(url="https://other.example/@alice", acct="alice@other.example")

# What a real Mastodon 4.x server puts in `content`.
REAL_HTML = (
    '<p><span class="h-card" translate="no"><a href="https://social.example/@brand" '
    'class="u-url mention">@<span>brand</span></a></span> my order <br />is late &amp; '
    "&lt;b&gt;broken&lt;/b&gt; :blobcat: "
    '<a href="https://social.example/tags/brandhelp" class="mention hashtag" rel="tag">#<span>brandhelp'
    '</span></a> <a href="https://example.com/some/very/long/path?x=1" target="_blank" '
    'rel="nofollow noopener" translate="no"><span class="invisible">https://</span>'
    '<span class="ellipsis">example.com/some/very/long</span><span class="invisible">/path?x=1</span>'
    "</a></p><p>second para</p>"
)
# What mastodon-mock renders for the same kind of post.
MOCK_HTML = (
    "<p>@brand my order is &lt;b&gt;broken&lt;/b&gt; &amp;amp; late :blobcat: #brandhelp "
    '<a href="https://x.example/a" rel="nofollow noopener" target="_blank">https://x.example/a</a></p>'
)


def test_real_mastodon_html() -> None:
    assert status_to_text(REAL_HTML, mentions=[BRAND]) == (
        "@brand my order\nis late & <b>broken</b> :blobcat: #brandhelp "
        "https://example.com/some/very/long/path?x=1\n\nsecond para"
    )


def test_mock_server_html() -> None:
    # "&amp;amp;" was literally typed as "&amp;" by the customer: unescape once only.
    assert status_to_text(MOCK_HTML) == (
        "@brand my order is <b>broken</b> &amp; late :blobcat: #brandhelp https://x.example/a"
    )


def test_mock_server_multiline_and_emphasis() -> None:
    html = "<p>line one<br />line <strong>two</strong></p><p>para <em>two</em> <code>x&lt;y</code></p>"
    assert status_to_text(html) == "line one\nline two\n\npara two x<y"


def test_remote_mention_uses_acct_from_mentions() -> None:
    html = (
        '<p><span class="h-card"><a href="https://other.example/@alice" class="u-url mention">'
        '@<span>alice</span></a></span> <span class="h-card"><a href="https://social.example/@brand" '
        'class="u-url mention">@<span>brand</span></a></span> same problem here</p>'
    )
    assert status_to_text(html, mentions=[ALICE, BRAND]) == "@alice@other.example @brand same problem here"


def test_unknown_mention_falls_back_to_link_text() -> None:
    html = '<p><a href="https://far.example/users/bob" class="u-url mention">@<span>bob</span></a> hi</p>'
    assert status_to_text(html, mentions=[BRAND]) == "@bob hi"


def test_link_with_descriptive_text_keeps_both() -> None:
    html = '<p>see <a href="https://docs.example/faq?a=1&amp;b=2">the FAQ</a></p>'
    assert status_to_text(html) == "see the FAQ (https://docs.example/faq?a=1&b=2)"


def test_link_with_shortened_display_uses_href() -> None:
    html = '<p><a href="https://example.com/a/b/c">example.com/a/b…</a></p>'
    assert status_to_text(html) == "https://example.com/a/b/c"


def test_non_http_link_shows_only_text() -> None:
    assert status_to_text('<p><a href="javascript:alert(1)">click</a></p>') == "click"


def test_hashtag_without_mention_class() -> None:
    html = '<p><a href="https://s.example/tags/Help" rel="tag">#<span>Help</span></a></p>'
    assert status_to_text(html) == "#Help"


def test_custom_emoji_img_alt() -> None:
    html = '<p>hi <img src="https://s.example/e.png" alt=":blobcat:" class="emoji"> there</p>'
    assert status_to_text(html) == "hi :blobcat: there"


def test_content_warning_prefix() -> None:
    out = status_to_text("<p>details</p>", spoiler_text="order\nproblem &amp; stuff")
    # spoiler_text is plain text from the API, so it is not entity-decoded.
    assert out == "CW: order problem &amp; stuff\n\ndetails"


def test_script_and_style_content_dropped() -> None:
    html = (
        "<p>before<script>alert('x<y')</script> <STYLE type='text/css'>p{color:red}</STYLE>after "
        "<script/>still</p><script>never closed"
    )
    assert status_to_text(html) == "before after still"


def test_control_and_bidi_characters_removed() -> None:
    html = "<p>pay\u202eatad\u202c me\x00\x07 now\u2066x\u2069 &#x202E;y &#7;z\ttab</p>"
    assert status_to_text(html) == "payatad me nowx y z tab"


def test_whitespace_collapsed_and_blank_lines_limited() -> None:
    html = "<p>  a \n\n  b\u00a0\u00a0c </p><p></p><p></p><br><br><br><p> d<br> <br> <br>e</p>"
    assert status_to_text(html) == "a b c\n\nd\n\ne"


def test_pre_keeps_line_breaks() -> None:
    assert status_to_text("<p>log:</p><pre>a  1\nb\t2</pre>x\ny") == "log:\n\na 1\nb 2\n\nx y"


def test_script_end_tag_with_attributes() -> None:
    assert status_to_text("a<script>x</script >b<style>y</STYLE foo=1>c") == "abc"


def test_lists_and_comments() -> None:
    html = "<p>steps:</p><ul><li>one</li><li>two<!-- hidden --></li></ul><!-- unclosed"
    assert status_to_text(html) == "steps:\n\n- one\n- two"


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>unclosed <b>bold <i>and", "unclosed bold and"),
        ("i <3 you & a<b", "i <3 you & a<b"),
        ("<p>a</p></p></div></a>b", "a\n\nb"),
        ("<a href='https://x.example'>never closed", "never closed (https://x.example)"),
        ("<<<>>>", "<<<>>>"),
        ("<![CDATA[x]]>y<!doctype html><?php echo 1 ?>z", "yz"),
        ("<p title='a>b'>q</p>", "b'>q"),
        ("&#0;&bogus; &#xFFFFFFFF; &", "\ufffd&bogus; \ufffd &"),
        ("", ""),
        ("<p>   </p>", ""),
    ],
)
def test_malformed_html_never_raises(html: str, expected: str) -> None:
    assert status_to_text(html) == expected


def test_truncation_adds_ellipsis() -> None:
    out = status_to_text("<p>" + "word " * 100 + "</p>", max_chars=20)
    assert out == "word word word word…"
    assert len(out) <= 20
    assert status_to_text("<p>short</p>", max_chars=5) == "short"


def test_truncation_counts_content_warning() -> None:
    out = status_to_text("<p>" + "x" * 50 + "</p>", spoiler_text="cw", max_chars=12)
    assert out == "CW: cw\n\nxxx…"


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError):
        status_to_text("<p>x</p>", max_chars=0)


@pytest.mark.parametrize(
    "html",
    [
        "<p>" + "long text " * 100_000 + "</p>",
        "<a" * 500_000,  # quadratic in html.parser
        "</" * 500_000,
        "<![" * 333_333,  # AssertionError in html.parser
        "<p>" * 333_333,
        '<a href="https://x.example/">' * 30_000 + "y" * 100_000,
        "<script>" + "a<" * 500_000,
        "<script>" + "</script " * 100_000,
    ],
)
def test_one_megabyte_input_returns_truncated(html: str) -> None:
    out = status_to_text(html, max_chars=5000)
    assert len(out) <= 5000
    if out:
        assert len(out) == 5000 and out.endswith("…")


# -- clean_text: what a customer controls, without what can reorder or hide it ------------------------

# Bidi embeddings, overrides, isolates and marks, and invisible characters with no place in a name or post.
REORDER_OR_HIDE = [
    "\u061c",  # ARABIC LETTER MARK
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    *map(chr, range(0x202A, 0x202F)),  # LRE, RLE, PDF, LRO, RLO
    *map(chr, range(0x2066, 0x206A)),  # LRI, RLI, FSI, PDI
    "\u200b",  # ZERO WIDTH SPACE
    "\u2060",  # WORD JOINER
    *map(chr, range(0x2061, 0x2065)),  # invisible function application, times, separator, plus
    *map(chr, range(0x206A, 0x2070)),  # deprecated shaping and digit-shape controls
    "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
    *map(chr, range(0xFFF9, 0xFFFC)),  # interlinear annotation: hides the annotation text
    "\U000e0001",  # LANGUAGE TAG
    "\U000e0041",  # a tag character outside a flag: invisible "A"
    "\x00",
    "\x1b",
    "\x85",
]


@pytest.mark.parametrize("char", REORDER_OR_HIDE, ids=lambda c: f"U+{ord(c):04X}")
def test_clean_text_strips_what_can_reorder_or_hide_text(char: str) -> None:
    assert clean_text(f"Acme{char} Support{char}") == "Acme Support"


@pytest.mark.parametrize(
    "kept",
    [
        "family \U0001f469\u200d\U0001f469\u200d\U0001f467",  # ZWJ sequence
        "keycap 1\ufe0f\u20e3",  # variation selector
        "England \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # tag sequence flag
        "Persian \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # ZWNJ is spelling there
        "\u05e9\u05dc\u05d5\u05dd and \u0645\u0631\u062d\u0628\u0627",  # right-to-left scripts themselves
        "tab\tand\nnewline",
    ],
)
def test_clean_text_keeps_emoji_joiners_and_scripts(kept: str) -> None:
    assert clean_text(kept) == kept


def test_status_text_strips_bidi_marks_and_zero_width_characters() -> None:
    html = "<p>pay\u200fme &#x200E;now\u061c \u200bplease &#xFEFF;x</p>"
    assert status_to_text(html) == "payme now please x"


def test_a_post_from_mastodon_json_has_no_control_in_any_string() -> None:
    rlo, pdf = "\u202e", "\u202c"
    status = {
        "id": "111",
        "uri": f"https://evil.example/{rlo}statuses/111",
        "url": f"https://evil.example/@m/{rlo}111",
        "content": '<p><a href="https://evil.example/@x" class="u-url mention">@x</a> hello</p>',
        "mentions": [{"url": "https://evil.example/@x", "acct": f"{rlo}x@evil.example"}],
        "tags": [{"name": f"help{rlo}"}],
        "created_at": "2024-05-01T12:30:00Z",
        "visibility": "public",
        "language": f"en{rlo}",
        "spoiler_text": "",
        "account": {
            "id": "9",
            "acct": f"m{rlo}@evil.example",
            "display_name": f"{rlo}evil{pdf} Support",
            "url": f"https://evil.example/@{rlo}m",
        },
    }
    post = post_from_json(status)
    assert post.account.display_name == "evil Support"
    assert post.text == "@x@evil.example hello"
    strings = [post.uri, post.url, post.text, post.language, *post.tags, *vars(post.account).values()]
    assert [s for s in strings if isinstance(s, str) and (rlo in s or pdf in s)] == []
