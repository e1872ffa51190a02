"""Whose address is it: the socket peer, or the client a trusted proxy names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from streamer.client_address import client_address, parse_networks
from streamer.config import ConfigError, parse_config

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


def headers(*pairs: tuple[str, str]) -> CIMultiDict:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("peer", "given_headers", "expected"),
    [
        ("198.51.100.1", headers(("X-Forwarded-For", "203.0.113.9")), "198.51.100.1"),  # untrusted peer
        ("10.0.0.2", headers(("X-Forwarded-For", "203.0.113.9")), "203.0.113.9"),
        ("10.0.0.2", headers(("X-Forwarded-For", "1.2.3.4, 203.0.113.9")), "203.0.113.9"),  # forged left part
        ("10.0.0.2", headers(("X-Forwarded-For", "203.0.113.9, 10.0.0.7")), "203.0.113.9"),  # two proxies
        ("10.0.0.2", headers(("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "203.0.113.9")), "203.0.113.9"),
        ("10.0.0.2", headers(("X-Forwarded-For", "10.0.0.9")), "10.0.0.9"),  # all proxies
        ("10.0.0.2", headers(), "10.0.0.2"),
        ("10.0.0.2", headers(("X-Forwarded-For", "garbage")), "10.0.0.2"),
        ("10.0.0.2", headers(("X-Forwarded-For", "203.0.113.9:5555")), "203.0.113.9"),
        ("10.0.0.2", headers(("Forwarded", 'for=1.2.3.4, for="[2001:db8::1]:443";proto=https')), "2001:db8::1"),
        ("10.0.0.2", headers(("Forwarded", "for=unknown")), "10.0.0.2"),
        ("10.0.0.2", headers(("Forwarded", "for=198.51.100.5"), ("X-Forwarded-For", "203.0.113.9")), "203.0.113.9"),
        ("fd00::1", headers(("X-Forwarded-For", "::ffff:203.0.113.9")), "203.0.113.9"),
        ("::ffff:10.0.0.2", headers(("X-Forwarded-For", "203.0.113.9")), "203.0.113.9"),
    ],
)
def test_client_address(peer, given_headers, expected):
    assert client_address(peer, given_headers, PROXIES) == expected


def test_no_trusted_proxies_means_the_peer_whatever_the_headers():
    assert client_address("10.0.0.2", headers(("X-Forwarded-For", "203.0.113.9")), []) == "10.0.0.2"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.ip_addresses(v=4).map(str) | st.text(max_size=12), max_size=5), st.ip_addresses(v=4))
def test_what_a_client_writes_never_outranks_what_the_proxy_appended(forged, real):
    """A proxy that appends the peer it saw: the client's own entries are never chosen."""
    if real in PROXIES[0]:
        return
    value = ", ".join([*forged, str(real)])
    assert client_address("10.0.0.2", headers(("X-Forwarded-For", value)), PROXIES) == str(real)


def test_trusted_proxies_must_be_networks(tmp_path):
    base = (
        "smtp: {from: a@b.c}\ntenants: {acme: {domain: a.auth0.com, client_id: x, client_secret: y}}\n"
        "rules: [{name: r, on: [ss], template: t}]\n"
    )
    config = parse_config("server: {trusted_proxies: [10.0.0.0/8, '::1']}\n" + base, env={})
    assert [str(n) for n in config.server.trusted_networks] == ["10.0.0.0/8", "::1/128"]
    assert parse_config(base, env={}).server.trusted_proxies == []
    with pytest.raises(ConfigError, match=r"<config>:1: server.trusted_proxies: 'proxy.local' is not an IP network"):
        parse_config("server: {trusted_proxies: [proxy.local]}\n" + base, env={})
