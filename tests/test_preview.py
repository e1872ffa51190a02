"""`streamer preview`: sample renders to .eml/.html/.txt, locale fallback, overrides, --all and errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from streamer.cli import main

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, templates_dir: Path) -> Path:
    path = tmp_path / "streamer.yaml"
    path.write_text(f"""\
smtp: {{host: 127.0.0.1, port: 2525, security: none, from: "Acme <no-reply@acme.test>"}}
templates: {{dir: "{templates_dir}", default_locale: en}}
redirects: {{allowed_hosts: ["app.acme.test"]}}
tenants:
  acme:
    domain: acme-test.eu.auth0.com
    client_id: m2m-client
    client_secret: m2m-secret
    vars: {{app_url: "https://app.acme.test", app_name: "Acme Test"}}
rules:
  - name: verify-email
    on: [ss]
    ticket: {{kind: email_verification, result_url: "{{{{ tenant.vars.app_url }}}}/verified"}}
    template: verify_email
  - name: welcome
    on: [sv]
    template: welcome
""")
    return path


@pytest.fixture
def shipped(tmp_path) -> Path:
    """A config over the shipped templates."""
    return write_config(tmp_path, REPO / "templates")


@pytest.fixture
def overridden(tmp_path) -> tuple[Path, Path]:
    """A config over a copy of the templates with welcome overridden per tenant and per client (en only)."""
    root = tmp_path / "templates"
    shutil.copytree(REPO / "templates", root)
    for directory, label in (
        ("tenants/acme/welcome", "tenant acme"),
        ("tenants/acme/clients/APP1/welcome", "tenant acme, client APP1"),
        ("clients/APP2/welcome", "client APP2"),
    ):
        (root / directory).mkdir(parents=True)
        (root / directory / "subject.txt").write_text(f"Welcome ({label}) to {{{{ app_name() }}}}\n")
        (root / directory / "body.html").write_text(
            f"<html><body><h1>Override for {label}</h1><p>{{{{ tenant.vars.app_name }}}} · {{{{ locale }}}}</p>"
            f'<a href="{{{{ tenant.vars.app_url }}}}">Open</a></body></html>\n'
        )
    return write_config(tmp_path, root), root


def run(*argv: str) -> int:
    return main(["preview", *argv])


@pytest.mark.parametrize(
    ("asked", "used"),
    [
        ("fr-CA", "fr-CA"),
        ("fr-BE", "fr"),
        ("fr", "fr"),
        ("de", "de"),
        ("ja", "en"),  # noqa: E501
        ("xx", "en"),
        ("not a locale!", "en"),
        (None, "en"),
    ],
)
def test_one_template_writes_three_files_in_the_locale_used(shipped, tmp_path, capsys, asked, used):
    out = tmp_path / "out"
    args = ["-c", str(shipped), "--template", "verify_email", "--out", str(out)]
    assert run(*args, *(["--locale", asked] if asked else [])) == 0
    stdout = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"verify_email.{used}.eml", f"verify_email.{used}.html", f"verify_email.{used}.txt"]
    for name in files:
        assert str(out / name) in stdout
    assert f"locale:   {used}" in stdout
    if asked and asked != used:
        assert repr(asked) in stdout or asked in stdout  # says what was asked and that it fell back
    html = (out / f"verify_email.{used}.html").read_text()
    assert f'<html lang="{used}"' in html
    assert "/u/email-verification?ticket=" in html  # a fake ticket: its rule creates one
    eml = (out / f"verify_email.{used}.eml").read_bytes()
    assert f"Content-Language: {used}\r\n".encode() in eml
    assert b"From: Acme <no-reply@acme.test>\r\n" in eml
    text = (out / f"verify_email.{used}.txt").read_text()
    assert "/u/email-verification?ticket=" in text


def test_a_tenant_brings_its_vars_and_its_domain_for_the_ticket(shipped, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        run(
            "-c", str(shipped), "--template", "verify_email", "--tenant", "acme", "--locale", "fr-CA", "--out", str(out)
        )
        == 0
    )
    html = (out / "verify_email.tenant-acme.fr-CA.html").read_text()
    assert "Acme Test" in html
    assert "https://acme-test.eu.auth0.com/u/email-verification?ticket=" in html
    assert "Confirmez votre adresse courriel pour Acme Test" in capsys.readouterr().out


@pytest.mark.parametrize("new_password", [False, True])
def test_the_reset_email_is_previewed_as_the_configured_mode_sends_it(shipped, tmp_path, capsys, new_password):
    text = shipped.read_text().replace("smtp:", 'server: {public_url: "https://mail.acme.test"}\nsmtp:', 1)
    text += (
        "  - name: password-reset\n    on: [password_reset_requested]\n"
        "    ticket: {kind: password_change, ttl_sec: 3600}\n    template: password_change\n"
        f"password_reset: {{enabled: true, new_password: {str(new_password).lower()}}}\n"
    )
    shipped.write_text(text)
    out = tmp_path / "out"
    assert run("-c", str(shipped), "--template", "password_change", "--tenant", "acme", "--out", str(out)) == 0
    html = (out / "password_change.tenant-acme.en.html").read_text()
    printed = capsys.readouterr().out
    if new_password:
        assert "https://mail.acme.test/password-reset/acme/confirm?ticket=SAMPLE-ONLY" in html
        assert "Confirm your new Acme Test password" in printed and "/u/reset-verify" not in html
    else:
        assert "https://acme-test.eu.auth0.com/u/reset-verify?ticket=" in html
        assert "Reset your Acme Test password" in printed and "/confirm?ticket=" not in html


@pytest.mark.parametrize(
    ("tenant", "client", "label", "stem"),
    [
        ("acme", None, "tenant acme", "welcome.tenant-acme"),
        ("acme", "APP1", "tenant acme, client APP1", "welcome.tenant-acme.client-APP1"),
        (None, "APP2", "client APP2", "welcome.client-APP2"),
        ("acme", "OTHER", "tenant acme", "welcome.tenant-acme.client-OTHER"),  # no override for OTHER: the tenant's
    ],
)
def test_the_most_specific_override_is_used(overridden, tmp_path, capsys, tenant, client, label, stem):
    config, root = overridden
    out = tmp_path / "out"
    scope = (["--tenant", tenant] if tenant else []) + (["--client", client] if client else [])
    assert run("-c", str(config), "--template", "welcome", *scope, "--out", str(out)) == 0
    html = (out / f"{stem}.en.html").read_text()
    assert f"Override for {label}" in html
    stdout = capsys.readouterr().out
    assert "(override)" in stdout and f"Welcome ({label}) to" in stdout


def test_an_override_without_the_locale_falls_back_as_a_whole(overridden, tmp_path, capsys):
    config, _ = overridden
    out = tmp_path / "out"
    assert run("-c", str(config), "--template", "welcome", "--tenant", "acme", "--locale", "fr", "--out", str(out)) == 0
    assert (out / "welcome.tenant-acme.en.html").exists()
    assert "locale:   en (asked for fr" in capsys.readouterr().out


def test_all_writes_an_index_linking_every_file(overridden, tmp_path, capsys):
    config, root = overridden
    out = tmp_path / "all"
    assert run("-c", str(config), "--all", "--out", str(out)) == 0
    index = (out / "index.html").read_text()
    written = {p.name for p in out.iterdir()} - {"index.html"}
    linked = set(re.findall(r'href="([^"]+)"', index))
    assert linked == written
    stems = {name.rsplit(".", 1)[0] for name in written}
    assert all({f"{stem}.html", f"{stem}.txt", f"{stem}.eml"} <= written for stem in stems)
    names = ["new_device", "password_change", "password_changed", "verify_email", "welcome"]
    for name in names:  # the default templates and the configured tenant
        for locale in ("en", "fr", "de", "es"):
            assert f"{name}.{locale}" in stems
            assert f"{name}.tenant-acme.{locale}" in stems or name == "welcome"
    # The overrides have English only: their other columns point at it and say so.
    assert {"welcome.tenant-acme.en", "welcome.tenant-acme.client-APP1.en", "welcome.client-APP2.en"} <= stems
    assert not any(s.startswith("welcome.tenant-acme.fr") for s in stems)
    assert index.count('href="welcome.tenant-acme.en.html"') == 5  # en, and the fr, fr-CA, de, es columns
    assert "→ en" in index
    for heading in ("Default templates", "Tenant acme", "Tenant acme, client APP1", "Client APP2"):
        assert f">{heading}</h2>" in index
    assert f"wrote {len(stems)} email(s)" in capsys.readouterr().out


def test_all_can_be_limited_to_one_template(shipped, tmp_path):
    out = tmp_path / "all"
    assert run("-c", str(shipped), "--all", "--template", "welcome", "--out", str(out)) == 0
    assert {p.name.split(".")[0] for p in out.iterdir()} == {"welcome", "index"}


def test_unknown_template_is_a_user_error(shipped, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("-c", str(shipped), "--template", "nope", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "no template 'nope'" in err and "verify_email" in err and "Traceback" not in err
    assert not out.exists()


def test_unknown_tenant_is_a_user_error(shipped, tmp_path, capsys):
    assert run("-c", str(shipped), "--template", "welcome", "--tenant", "globex", "--out", str(tmp_path)) == 1
    assert "unknown tenant 'globex'" in capsys.readouterr().err


def test_template_or_all_is_required(shipped, capsys):
    assert run("-c", str(shipped)) == 1
    assert "--template" in capsys.readouterr().err


def test_a_render_error_names_the_file_and_line(tmp_path, capsys):
    root = tmp_path / "templates"
    shutil.copytree(REPO / "templates", root)
    (root / "welcome" / "body.de.html").write_text("<html>\n<body>\n<p>{{ user.nope.deeper }}</p>\n</body></html>\n")
    config = write_config(tmp_path, root)
    assert run("-c", str(config), "--template", "welcome", "--locale", "de", "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert f"{root / 'welcome' / 'body.de.html'}:3:" in err and "nope" in err

    # --all still renders the rest and the index, and fails with the same location.
    out = tmp_path / "all"
    assert run("-c", str(config), "--all", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert f"{root / 'welcome' / 'body.de.html'}:3:" in err
    index = (out / "index.html").read_text()
    assert 'class="error"' in index and (out / "welcome.en.html").exists()


def test_a_subject_variant_without_its_body_is_rendered_and_flagged(overridden, tmp_path, capsys):
    config, root = overridden
    (root / "tenants/acme/welcome/subject.fr.txt").write_text("Bienvenue (acme) sur {{ app_name() }}\n")
    out = tmp_path / "all"
    assert run("-c", str(config), "--all", "--template", "welcome", "--out", str(out)) == 0
    assert b"Subject: Bienvenue (acme) sur Acme Test\r\n" in (out / "welcome.tenant-acme.fr.eml").read_bytes()
    assert b"Subject: Welcome (tenant acme) to Acme Test\r\n" in (out / "welcome.tenant-acme.en.eml").read_bytes()
    assert ">mixed</span>" in (out / "index.html").read_text()

    assert (
        run(
            "-c",
            str(config),
            "--template",
            "welcome",
            "--tenant",
            "acme",
            "--locale",
            "fr",
            "--out",
            str(tmp_path / "one"),
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "subject.fr.txt, body.html" in stdout and "different languages" in stdout
    assert (tmp_path / "one" / "welcome.tenant-acme.fr.html").exists()  # named after the locale asked for


def test_the_eml_carries_the_configured_reply_to(tmp_path):
    config = write_config(tmp_path, REPO / "templates")
    config.write_text(
        config.read_text()
        .replace('from: "Acme <no-reply@acme.test>"}', 'from: "Acme <no-reply@acme.test>", reply_to: "help@acme.test"}')
        .replace(
            "    client_secret: m2m-secret\n",
            '    client_secret: m2m-secret\n    reply_to: "Acme Care <care@acme.test>"\n',
        )
    )  # noqa: E501
    out = tmp_path / "out"
    assert run("-c", str(config), "--template", "welcome", "--out", str(out)) == 0
    assert b"Reply-To: help@acme.test\r\n" in (out / "welcome.en.eml").read_bytes()
    assert run("-c", str(config), "--template", "welcome", "--tenant", "acme", "--out", str(out)) == 0
    assert b"Reply-To: Acme Care <care@acme.test>\r\n" in (out / "welcome.tenant-acme.en.eml").read_bytes()
