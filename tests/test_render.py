"""Rendering: the shipped templates in every locale, escaping, the sandbox and `check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from streamer.locale import locale_chain
from streamer.render import RenderError, html_to_text, render
from streamer.sample_context import TICKET_TEMPLATES, sample_context
from streamer.templates import Templates, describe_device, greeting_name

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
NAMES = ["verify_email", "welcome", "password_change", "password_changed", "new_device"]
LOCALES = ["en", "fr", "de", "es"]
#: A word each language's version must contain, so a wrong fallback cannot pass unnoticed.
GREETING = {"en": "Hello", "fr": "Bonjour", "de": "Guten Tag", "es": "Hola"}


@pytest.fixture(scope="module")
def shipped() -> Templates:
    return Templates(SHIPPED, "en")


def _render(
    templates: Templates,
    name: str,
    locale: str,
    *,
    tenant: str | None = "acme",
    client_id: str | None = None,
    context: dict | None = None,
):
    context = context or sample_context(name, locale)
    return render(
        templates, name, tenant=tenant, client_id=client_id, locale_chain=templates.chain(locale), context=context
    )


def test_ships_every_template_in_every_locale(shipped: Templates) -> None:
    assert sorted(shipped.template_names()) == sorted(NAMES)
    for name in NAMES:
        assert set(LOCALES) <= set(shipped.locales(name)), name


def test_shipped_templates_pass_check(shipped: Templates) -> None:
    assert [str(p) for p in shipped.check(required=NAMES, tenant_vars={"acme": {}})] == []


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", NAMES)
def test_every_default_renders(shipped: Templates, name: str, locale: str) -> None:
    context = sample_context(name, locale)
    email = _render(shipped, name, locale, context=context)
    assert email.locale == locale
    assert email.subject and "\n" not in email.subject and email.subject == email.subject.strip()
    assert "Acme" in email.subject
    assert f'<html lang="{locale}"' in email.html
    assert email.text.strip() and "None" not in email.text and "None" not in email.html
    assert GREETING[locale] in email.text
    assert "Chloé" in email.text or locale != "fr"
    if name in TICKET_TEMPLATES:
        url = context["ticket_url"]
        assert url in email.html
        assert any(line.endswith(f"({url})") for line in email.text.splitlines())  # whole, on one line
    # the preheader is for the inbox list, not for the text part
    assert "\u034f" not in email.text


@pytest.mark.parametrize("name", NAMES)
def test_renders_with_minimal_data(shipped: Templates, name: str) -> None:
    """No tenant vars, no names, no metadata, no IP/UA: still a complete email."""
    context = sample_context(name, "de", tenant_vars={})
    context["user"] = {"email": "x@example.com", "user_id": "auth0|1"}
    context["client"] = {"id": "c", "name": None}
    context["event"] = {"type": "s", "date": "2026-03-04T21:17:42.031Z"}
    email = _render(shipped, name, "de", context=context)
    assert "Guten Tag," in email.text
    assert "None" not in email.text


def test_locale_choice_end_to_end(shipped: Templates) -> None:
    def for_user(profile: dict) -> str:
        context = sample_context("welcome", "en")
        context["user"] = {**context["user"], **profile}
        return render(
            shipped,
            "welcome",
            tenant="acme",
            client_id=None,
            locale_chain=locale_chain(context["user"], None, "en"),
            context=context,
        ).locale

    assert for_user({"user_metadata": {"locale": "fr"}}) == "fr"  # a French user gets French
    assert for_user({"user_metadata": {"locale": "fr_CA"}}) == "fr-CA"  # its own variant ("courriel")
    assert for_user({"user_metadata": {"locale": "fr-BE"}}) == "fr"  # fr-BE falls back to fr
    assert for_user({"user_metadata": {}, "locale": "de-AT"}) == "de"  # social profile locale
    assert for_user({"user_metadata": {"locale": "ja"}}) == "en"  # unknown → default
    assert for_user({"user_metadata": {"locale": "<b>"}}) == "en"  # garbage → default


def test_locale_in_context_is_the_one_used(tmp_path: Path) -> None:
    (tmp_path / "hi").mkdir()
    (tmp_path / "hi" / "subject.txt").write_text("{{ locale }}")
    (tmp_path / "hi" / "body.html").write_text("<p>{{ locale }}</p>")
    (tmp_path / "hi" / "subject.fr.txt").write_text("{{ locale }}")
    (tmp_path / "hi" / "body.fr.html").write_text("<p>{{ locale }}</p>")
    templates = Templates(tmp_path)
    email = render(
        templates, "hi", tenant=None, client_id=None, locale_chain=["fr-CA", "fr", "en"], context={"user": {}}
    )
    assert (email.subject, email.locale, email.text) == ("fr", "fr", "fr\n")


def test_user_controlled_values_are_escaped_in_html(shipped: Templates) -> None:
    context = sample_context("password_changed", "en")
    context["user"]["given_name"] = "<script>alert(1)</script>"
    context["event"]["user_agent"] = 'Evil"/><img src=x onerror=alert(1)>'
    context["event"]["ip"] = "<b>1.2.3.4</b>"
    email = _render(shipped, "password_changed", "en", context=context)
    assert "<script>alert" not in email.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "<b>1.2.3.4" not in email.html and "onerror=alert" not in email.html.replace("onerror=alert(1)&gt;", "")
    assert "<img src=x" not in email.html


def _tree(tmp_path: Path, files: dict[str, str]) -> Templates:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Templates(tmp_path, "en")


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "user.__class__",
        "cycler.__init__.__globals__",
        "self._TemplateReference__context",
        "user.app_metadata.clear()",  # the profile is shared and cached: no mutation
        "event.update({'x': 1})",
    ],
)
def test_sandbox_blocks_escapes(tmp_path: Path, expression: str) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "s", "t/body.html": f"{{{{ {expression} }}}}"})
    with pytest.raises(RenderError) as info:
        render(
            templates,
            "t",
            tenant=None,
            client_id=None,
            locale_chain=["en"],
            context={"user": {"app_metadata": {}}, "event": {}},
        )
    assert isinstance(info.value.__cause__, SecurityError)
    assert info.value.where == "t/body.html:1"


def test_undefined_names_are_errors_with_file_and_line(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "s", "t/body.html": "<p>ok</p>\n<p>{{ user.nope }}</p>"})
    with pytest.raises(RenderError) as info:
        render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={"user": {}})
    assert info.value.where == "t/body.html:2"
    assert "nope" in str(info.value)


def test_tenant_layout_override_and_shared_locale_variant(tmp_path: Path) -> None:
    body = '{% extends "_layout/base.html" %}{% block content %}body{% endblock %}'
    templates = _tree(
        tmp_path,
        {
            "t/subject.txt": "s",
            "t/body.html": body,
            "t/subject.fr.txt": "s",
            "t/body.fr.html": body,
            "_layout/base.html": "<div>default {% block content %}{% endblock %}</div>",
            "_layout/base.fr.html": "<div>défaut {% block content %}{% endblock %}</div>",
            "tenants/acme/_layout/base.html": "<div>acme {% block content %}{% endblock %}</div>",
        },
    )

    def text(tenant: str | None, locale: str) -> str:
        return render(
            templates, "t", tenant=tenant, client_id=None, locale_chain=templates.chain(locale), context={}
        ).text.strip()

    assert text(None, "en") == "default body"
    assert text(None, "fr") == "défaut body"
    assert text("other", "fr") == "défaut body"
    assert text("acme", "fr") == "acme body"  # the tenant's layout wins as a whole
    assert text("acme", "en") == "acme body"


def test_css_is_inlined_and_media_queries_kept(shipped: Templates) -> None:
    html = _render(shipped, "verify_email", "en").html
    assert '<h1 style="' in html
    assert "@media only screen and (max-width: 620px)" in html
    assert ".card {" not in html.split("@media")[0]  # plain rules were inlined, not kept


def test_body_txt_wins_over_generated_text(tmp_path: Path) -> None:
    templates = _tree(
        tmp_path,
        {"t/subject.txt": "s", "t/body.html": "<p>html</p>", "t/body.txt": "Hello {{ user.name }} & <co>\r\n  \n"},
    )
    email = render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={"user": {"name": "A&B"}})
    assert email.text == "Hello A&B & <co>\n"  # text templates are not HTML-escaped


def test_subject_is_one_clean_line(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "  Hi {{ user.name }}\n\n  there  ", "t/body.html": "x"})
    email = render(
        templates,
        "t",
        tenant=None,
        client_id=None,
        locale_chain=["en"],
        context={"user": {"name": "A\r\nBcc: x@y\u2028z\u00a0!"}},
    )
    assert email.subject == "Hi A Bcc: x@y z\u00a0! there"


def test_html_to_text_keeps_long_links_whole() -> None:
    url = "https://tenant.eu.auth0.com/u/email-verification?ticket=" + "A" * 300 + "#"
    html = (
        f'<p>Click <a href="{url}">Verify my address</a> now, or <a href="mailto:s@x.test">s@x.test</a>.</p>'
        f'<p data-text="skip">hidden</p><div style="display:none">also hidden</div>'
        f'<p><a href="{url}">{url}</a></p><h1>Title</h1><table><tr><td>When:</td><td>today</td></tr></table>'
    )
    text = html_to_text(html)
    assert f"Click Verify my address ({url}) now, or s@x.test." in text.splitlines()
    assert url in text.splitlines()  # a bare link stays bare
    assert "hidden" not in text
    assert "Title" in text.splitlines() and "#" not in text.replace(url, "")
    assert "When: today" in text.splitlines()


def test_html_to_text_skips_hidden_elements_and_the_head() -> None:
    html = (
        "<html><head><title>TITLE</title><style>.x { color: red }</style><script>var s = 1;</script></head>"
        '<body><div class="preheader" data-text="skip">PREHEADER<p>inner</p></div>'
        '<p>a<span style="display: none !important">X1</span>b</p>'
        '<p>c<span style="VISIBILITY:Hidden">X2</span> d</p>'
        '<p>e <span style="font-size:1px; mso-hide: all">X3<b>X4</b></span>f</p>'
        '<p hidden>X5</p><p>g <a href="https://x.test" data-text="skip">X6</a>h</p>'
        '<p style="color: red; text-decoration: none">shown</p>'
        "<script>X7()</script><style>p{}</style></body></html>"
    )
    assert html_to_text(html) == "ab\n\nc d\n\ne f\n\ng h\n\nshown\n"


def test_html_to_text_links() -> None:
    text = html_to_text(
        '<p><a href="https://x.test/a"><span><b>Bold</b> label</span></a>, '
        '<a href="https://x.test/b">see https://x.test/b</a>, <a href="https://x.test/c"><img src="c.png"></a>, '
        '<a href="#top">top</a>, <a href="">none</a>, <a href="mailto:s@x.test">Write to us</a>, '
        '<a href="MAILTO:s@x.test">s@x.test</a>.</p><h2>Go <a href="https://x.test/h">here</a></h2>'
    )
    assert text.splitlines() == [
        "Bold label (https://x.test/a), see https://x.test/b, https://x.test/c, top, none, "
        "Write to us (s@x.test), s@x.test.",
        "",
        "Go here (https://x.test/h)",
    ]
    nested = html_to_text('<p><a href="https://a.test">outer <a href="https://b.test">inner</a> tail</a></p>')
    assert "outer (https://a.test)" in nested and "inner (https://b.test)" in nested
    assert nested.count("https://a.test") == 1 and nested.count("https://b.test") == 1


def test_html_to_text_lists() -> None:
    html = (
        "<p>Steps:</p><ol><li>one</li><li><p>two</p></li><li>three<br>more\n  words</li></ol>"
        "<ul>\n<li>a</li>\n<li>b<ul><li>b1</li><li>b2</li></ul></li>\n<li>c</li></ul>"
        '<ol start="7"><li>seven</li></ol><p>after</p>'
    )
    assert html_to_text(html) == (
        "Steps:\n\n1. one\n2. two\n3. three\n   more words\n\n- a\n- b\n  - b1\n  - b2\n- c\n\n7. seven\n\nafter\n"
    )


def test_html_to_text_tables() -> None:
    html = (
        "<p>Before</p><table>\n<tr><th>Name</th><th>Value</th></tr>\n"
        "<tr>\n<td>When:</td>\n<td> 4 March </td></tr><tr><td>Empty:</td><td></td><td>last</td></tr>"
        "<tr><td>Nested:</td><td><table><tr><td>x</td><td>y</td></tr></table></td></tr></table>after"
    )
    assert html_to_text(html) == "Before\n\nName Value\nWhen: 4 March\nEmpty: last\nNested:\n\nx y\n\nafter\n"


def test_html_to_text_breaks_blocks_and_whitespace() -> None:
    html = (
        "<div>  one\n\n  two\t<span> three </span> four</div><div></div><p></p>"
        "<p>a<br>b<br><br><br><br>c</p><div>d<div>e</div>f</div><h1>Big <em>title</em></h1>"
        "<p>x<b>y</b>z</p><pre>  keep\n    this</pre>end"
    )
    assert html_to_text(html) == (
        "one two three four\n\na\nb\n\nc\n\nd\n\ne\n\nf\n\nBig title\n\nxyz\n\n  keep\n    this\n\nend\n"
    )
    assert html_to_text("") == html_to_text("  ") == html_to_text("<!-- only a comment -->") == "\n"


def test_html_to_text_entities_and_unicode() -> None:
    html = (
        "<p>Tom &amp; Jerry &lt;tag&gt; &quot;q&quot; &#39;s&#x27; caf&eacute; &#x2019; &euro;</p>"
        "<p>Chlo\u00e9 Lef\u00e8vre, Wei\u00df&nbsp;: \u00ab&nbsp;oui&nbsp;\u00bb 9:17\u202fPM</p>"
    )
    assert html_to_text(html).splitlines() == [
        "Tom & Jerry <tag> \"q\" 's' café ’ €",
        "",
        "Chloé Lefèvre, Weiß\u00a0: «\u00a0oui\u00a0» 9:17\u202fPM",
    ]


_HTMLISH = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<div>",
                "</div>",
                "<br>",
                "<table>",
                "<tr>",
                "<td>",
                "</td>",
                "</tr>",
                "</table>",
                "<ul>",
                "<ol>",
                "<li>",
                "</li>",
                "</ul>",
                "</ol>",
                "<h1>",
                "</h1>",
                "<pre>",
                "</pre>",
                "<blockquote>",
                "</blockquote>",
                "<hr>",
                "<img src=x alt=y>",
                "<b>",
                "</b>",
                '<a href="https://x.test/p?q=1">',
                '<a href="mailto:m@x.test">',
                '<a href="#t">',
                "</a>",
                '<span style="display:none">',
                '<div data-text="skip">',
                "</span>",
                "&amp;",
                "&nbsp;",
                "&eacute;",
                "&#x2019;",
                "&bogus;",
                "\n",
                "  ",
                "\t",
            ]
        ),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<>&\"'"), max_size=12),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_HTMLISH, _HTMLISH, st.text(max_size=60))
def test_html_to_text_never_raises_nor_shows_scripts(before: str, after: str, junk: str) -> None:
    for html in (
        before + "<script>var SECRETBODY = '<p>';</script>" + after,
        before + "<style>p::after { content: 'SECRETBODY' }</style>" + after,
        junk,
        before + junk,
    ):
        text = html_to_text(html)
        assert "SECRETBODY" not in text
        assert text.endswith("\n") and "\n\n\n" not in text
        assert all(line == line.rstrip() for line in text.split("\n"))


def test_check_reports_broken_template_with_file_and_line(tmp_path: Path) -> None:
    templates = _tree(
        tmp_path,
        {
            "t/subject.txt": "s",
            "t/body.html": "<p>one</p>\n<p>two</p>\n{% if %}\n",
            "t/subject.fr.txt": "s",  # but no body.fr.html
            "u/subject.txt": "s",
            "u/body.html": "<p>{{ not_defined_anywhere }}</p>",
            "v/subject.txt": "s",
            "v/body.html": '{% extends "_layout/missing.html" %}',
        },
    )
    problems = [str(p) for p in templates.check()]
    assert any(p.startswith("t/body.html:3: error:") for p in problems), problems
    assert any(p.startswith("t/body.fr.html: warning: missing") for p in problems), problems
    assert any(p.startswith("u/body.html:1: error:") and "not_defined_anywhere" in p for p in problems), problems
    assert any(p.startswith("v/body.html:1: error: _layout/missing.html does not exist") for p in problems), problems


def test_check_renders_the_password_confirmation_branch_of_ticket_templates(tmp_path: Path) -> None:
    templates = _tree(
        tmp_path,
        {
            "reset/subject.txt": "s",
            "reset/body.html": "<p>{{ ticket_url }}</p>\n{% if password_confirmation is defined %}{{ typo_here }}"
            "{% endif %}\n",
        },
    )
    problems = [str(p) for p in templates.check(ticket_templates={"reset"})]
    assert any(p.startswith("reset/body.html:2: error:") and "typo_here" in p for p in problems), problems
    fixed = _tree(
        tmp_path / "fixed",
        {
            "reset/subject.txt": "s",
            "reset/body.html": "<p>{{ ticket_url }}</p>\n{% if password_confirmation is defined %}yes{% endif %}\n",
        },
    )
    assert [str(p) for p in fixed.check(ticket_templates={"reset"})] == []


def test_check_warns_when_override_lacks_a_locale(tmp_path: Path) -> None:
    templates = _tree(
        tmp_path,
        {
            "t/subject.txt": "s",
            "t/body.html": "b",
            "t/subject.de.txt": "s",
            "t/body.de.html": "b",
            "tenants/acme/t/subject.txt": "s",
            "tenants/acme/t/body.html": "b",
        },
    )
    problems = [str(p) for p in templates.check()]
    assert any(p.startswith("tenants/acme/t/: warning: no de variant") for p in problems), problems


def test_reload_picks_up_changes(tmp_path: Path) -> None:
    templates = _tree(tmp_path, {"t/subject.txt": "one", "t/body.html": "b"})
    assert render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={}).subject == "one"
    (tmp_path / "t" / "subject.txt").write_text("two")
    templates.reload()
    assert render(templates, "t", tenant=None, client_id=None, locale_chain=["en"], context={}).subject == "two"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"given_name": "Ana", "name": "Ana Silva"}, "Ana"),
        ({"name": "ana.silva@example.com", "nickname": "ana.silva", "email": "ana.silva@example.com"}, ""),
        ({"name": "Bruno Costa", "email": "b@example.com"}, "Bruno Costa"),
        ({"nickname": "bruno", "email": "b.costa@example.com"}, "bruno"),
        ({"user_metadata": {"first_name": "Zoé"}, "name": "z@x.com"}, "Zoé"),
        ({"given_name": "Visit https://evil.test now"}, ""),
        ({"given_name": "Line\r\nBreak"}, "Line Break"),
        ({}, ""),
    ],
)
def test_greeting_name(user: dict, expected: str) -> None:
    assert greeting_name(user) == expected


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/128.0.0.0 Mobile Safari/537.36",
            "Chrome (Android, Pixel 8)",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Safari/605.1.15",
            "Safari (macOS)",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
            "Safari/537.36 Edg/120.0",
            "Microsoft Edge (Windows)",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Mobile/15E148 Safari/604.1",
            "Safari (iPhone)",
        ),
        ("Chrome 128.0.0 / Mac OS X 10.15.7", "Chrome (macOS)"),
        ("unknown", ""),
        (None, ""),
    ],
)
def test_describe_device(ua: str | None, expected: str) -> None:
    assert describe_device(ua) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(blacklist_categories=()) | st.sampled_from("\x00\x1f\x7f\x85\x9f\u2028\u2029\ud800 \t")))
def test_clean_text_drops_exactly_the_control_categories(value):
    """The regex spells out Unicode's Cc, Cs, Zl and Zp; it must agree with the database."""
    import unicodedata

    from streamer.templates.text import clean_text

    expected = " ".join(
        "".join(" " if unicodedata.category(ch) in {"Cc", "Cs", "Zl", "Zp"} else ch for ch in value).split()
    )
    assert clean_text(value) == expected
