"""DeliverySettings: what delivery reads of the config, built in one place (DeliverySettings.of)."""

from streamer.config import parse_config
from streamer.delivery import DeliverySettings

CONFIG = """\
server: {public_url: "https://mail.acme.test"}
smtp: {from: "Acme <no-reply@acme.test>", reply_to: "help@acme.test"}
templates: {default_locale: fr}
redirects: {allowed_hosts: [app.acme.test]}
unsubscribe: {mailto: unsubscribe@acme.test}
tenants:
  acme: {domain: a.eu.auth0.com, client_id: x, client_secret: y, reply_to: "Acme Care <care@acme.test>"}
  beta: {domain: b.eu.auth0.com, client_id: x, client_secret: y}
rules: [{name: r, on: [s], template: welcome}]
"""


def test_settings_carry_what_delivery_reads_with_reply_to_decided_per_tenant():
    config = parse_config(CONFIG, env={})
    settings = DeliverySettings.of(config)
    assert settings.from_addr == "Acme <no-reply@acme.test>"
    assert settings.reply_to == {"acme": "Acme Care <care@acme.test>", "beta": "help@acme.test"}
    assert set(settings.tenants) == {"acme", "beta"} and settings.tenants["acme"].domain == "a.eu.auth0.com"
    assert settings.default_locale == "fr" and settings.allowed_hosts == ["app.acme.test"]
    assert (settings.public_url, settings.unsubscribe_mailto) == ("https://mail.acme.test", "unsubscribe@acme.test")
    assert settings.dkim_keys == []
