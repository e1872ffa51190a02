"""The shipped layout and copy: readable colours, language marks Gmail keeps, the charset first,
fr-CA wording, and the language fixes a native reader asked for (they must not come back)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from lxml import html as lxml_html

from streamer.check import check_config
from streamer.colors import DEFAULT_BUTTON_COLOR, brand_color_problem, contrast_ratio, parse_hex_color
from streamer.config import parse_config
from streamer.render import render
from streamer.sample_context import sample_context
from streamer.templates import Templates
from streamer.templates.filters import fr_de

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
NAMES = ["verify_email", "welcome", "password_change", "password_changed", "new_device"]
LOCALES = ["en", "fr", "fr-CA", "de", "es"]


@pytest.fixture(scope="module")
def shipped() -> Templates:
    return Templates(SHIPPED, "en")


def rendered(templates: Templates, name: str, locale: str, **vars_):
    context = sample_context(name, locale)
    context["tenant"]["vars"].update(vars_)
    return render(templates, name, tenant="acme", client_id=None, locale_chain=templates.chain(locale), context=context)


def style_of(element) -> dict[str, str]:
    pairs = (item.split(":", 1) for item in (element.get("style") or "").split(";") if ":" in item)
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", NAMES)
def test_layout(shipped, name, locale):
    email = rendered(shipped, name, locale, logo_url="https://app.acme.test/logo.png")
    head = email.html.split("<head>", 1)[1]
    assert head.startswith('<meta charset="utf-8">')  # before css_inline's <style>
    tree = lxml_html.fromstring(email.html)
    [wrapper] = tree.xpath("//body/div[@role='article']")
    assert wrapper.get("lang") == email.locale and wrapper.get("dir") == "ltr"  # Gmail drops <html lang>
    [preheader] = tree.xpath("//div[contains(@class, 'preheader')]")
    assert "color" not in style_of(preheader) and style_of(preheader)["display"] == "none"
    [logo] = tree.xpath("//td[contains(@class, 'header')]/img")
    assert logo.get("width") == "160" and style_of(logo)["display"] == "block"
    # Footer text against the page background: WCAG AA.
    [footer] = tree.xpath("//td[contains(@class, 'footer')]")
    background = style_of(tree.xpath("//table[contains(@class, 'wrapper')]")[0])["background-color"]
    assert contrast_ratio(style_of(footer)["color"], background) >= 4.5
    assert '<meta name="color-scheme" content="light dark">' in email.html
    assert "@media (prefers-color-scheme: dark)" in email.html


def test_rtl_locales_set_dir_on_the_wrapper_too(tmp_path):
    (tmp_path / "welcome").mkdir(parents=True)
    shutil.copytree(SHIPPED / "_layout", tmp_path / "_layout")
    (tmp_path / "welcome" / "subject.txt").write_text("x")
    page = '{% extends "_layout/base.html" %}{% block content %}TEXT{% endblock %}'
    (tmp_path / "welcome" / "body.ar.html").write_text(page.replace("TEXT", "مرحبا"))
    (tmp_path / "welcome" / "body.html").write_text(page.replace("TEXT", "Hi"))
    email = rendered(Templates(tmp_path, "en"), "welcome", "ar")
    assert '<div role="article" aria-roledescription="email" lang="ar" dir="rtl">' in email.html


def test_logo_width_comes_from_tenant_vars_within_bounds(shipped):
    def logo(width):
        tree = lxml_html.fromstring(
            rendered(shipped, "welcome", "en", logo_url="https://x.test/l.png", logo_width=width).html
        )
        return tree.xpath("//td[contains(@class, 'header')]/img")[0].get("width")

    assert logo(200) == "200"
    assert logo(5000) == "160" and logo("wide") == "160"


@pytest.mark.parametrize(
    ("wanted", "used"),
    [
        ("#1d4ed8", "#1d4ed8"),
        ("#0F766E", "#0f766e"),
        ("#c00", "#cc0000"),
        ("#fde047", DEFAULT_BUTTON_COLOR),  # yellow: white text unreadable
        ("#zzzzzz", DEFAULT_BUTTON_COLOR),
        ("red", DEFAULT_BUTTON_COLOR),
        ("#123456; background:url(x)", DEFAULT_BUTTON_COLOR),
        (None, DEFAULT_BUTTON_COLOR),
    ],
)
def test_brand_color_is_a_readable_hex_colour_or_the_default(shipped, wanted, used):
    tree = lxml_html.fromstring(rendered(shipped, "verify_email", "en", brand_color=wanted).html)
    [cell] = tree.xpath("//td[contains(@class, 'button-cell')]")
    assert cell.get("bgcolor") == used and style_of(cell)["background-color"] == used


def test_colour_maths():
    assert round(contrast_ratio("#ffffff", "#000000"), 2) == 21.0
    assert round(contrast_ratio("#ffffff", "#2563eb"), 2) == 5.17
    assert parse_hex_color("#ABC") == "#aabbcc" and parse_hex_color("#abcd") is None
    assert brand_color_problem("#2563eb") is None
    assert "contrast of 1.3:1" in brand_color_problem("#fde047")


def test_check_reports_bad_brand_colours(tmp_path):
    config = parse_config(
        f"""\
smtp: {{from: "Acme <no-reply@acme.test>"}}
templates: {{dir: "{SHIPPED}"}}
tenants:
  acme: {{domain: a.eu.auth0.com, client_id: x, client_secret: y, webhook_token: t, vars: {{brand_color: "#fde047"}}}}
  beta: {{domain: b.eu.auth0.com, client_id: x, client_secret: y, webhook_token: t, vars: {{brand_color: "blue"}}}}
  ok: {{domain: c.eu.auth0.com, client_id: x, client_secret: y, webhook_token: t, vars: {{brand_color: "#1d4ed8"}}}}
rules: [{{name: r, on: [s], template: welcome}}]
""",
        base_dir=tmp_path,
        env={},
    )
    report = check_config(config)
    assert [e for e in report.errors if "brand_color" in e] == [
        f"{config.source}: tenants.beta.vars.brand_color: 'blue' is not a hex colour such as #1a56db "
        f"(buttons use {DEFAULT_BUTTON_COLOR} until then)"
    ]
    [warning] = [w for w in report.warnings if "brand_color" in w]
    assert "tenants.acme.vars.brand_color" in warning and "below 4.5:1" in warning


def test_french_elision():
    assert [fr_de(n) for n in ("Acme", "Zoom", "Élan", "Uber", "Yahoo", "Ypsilon", "Hôtel")] == [
        "d’Acme",
        "de Zoom",
        "d’Élan",
        "d’Uber",
        "de Yahoo",
        "d’Ypsilon",
        "de Hôtel",
    ]


def test_fr_ca_says_courriel_and_fr_keeps_e_mail(shipped):
    for name in NAMES:
        canadian = rendered(shipped, name, "fr-CA")
        assert "e-mail" not in canadian.text.lower() and "e-mail" not in canadian.subject.lower(), name
        if name == "verify_email":
            assert "adresse courriel" in canadian.subject and "adresse courriel" in canadian.text
    assert "e-mail" in rendered(shipped, "verify_email", "fr").subject


#: (template, locale, must say, must not say): the reviewer's fixes.
COPY = [
    ("new_device", "en", "Wasn’t this you?", "Wasn’t you?"),
    ("password_change", "en", "use the button below", "use the link below"),
    ("new_device", "en", "Date and time:", "When:"),
    ("new_device", "de", "Das waren Sie nicht?", "Das waren nicht Sie?"),
    ("verify_email", "de", "ist zeitlich begrenzt gültig", "nur für begrenzte Zeit"),
    ("new_device", "de", "wir haben eine Anmeldung in Ihrem Konto bei Acme", "uns unbekannten Gerät"),
    ("new_device", "de", "von einem Gerät festgestellt, das wir nicht kennen", "Hallo"),
    ("password_change", "de", "Über die Schaltfläche unten", "folgenden Link"),
    ("welcome", "de", "Guten Tag Jürgen,", "Hallo"),
    ("new_device", "fr", "de la page de connexion d’Acme", "de connexion de Acme"),
    ("new_device", "fr", "Date et heure\u00a0:", "Date\u00a0:"),
    ("password_change", "fr", "utilisez le bouton ci-dessous", "suivez le lien"),
    ("new_device", "es", "Fecha y hora:", "Fecha:"),
    ("verify_email", "es", "tiene una validez limitada", "caduca"),
    ("password_changed", "es", "Si ha sido usted quien ha hecho este cambio", "Si ha realizado usted"),
    ("password_change", "es", "utilice el botón", "siguiente enlace"),
]


@pytest.mark.parametrize(("name", "locale", "wanted", "unwanted"), COPY)
def test_reviewed_copy(shipped, name, locale, wanted, unwanted):
    email = rendered(shipped, name, locale, password_reset_url=None)
    text = re.sub(r"[ \t]+", " ", email.text.replace("\u00a0", "\u00a0"))
    assert wanted in text and unwanted not in text


def test_spanish_hosted_pages_use_usted_like_the_emails():
    from streamer.password_reset.messages import MESSAGES

    informal = re.compile(
        r"\b(tu|te|introduce|elige|revisa|escribe|espera|vuelve|envíalo|comprueba|confirma)\b", re.IGNORECASE
    )
    assert [key for key, text in MESSAGES["es"].items() if informal.search(text)] == []
