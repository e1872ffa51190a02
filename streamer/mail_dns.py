"""`check --online`: do the sending domains' DNS records let receivers trust this mail?

Three lookups: the DKIM selector's TXT record (and whether it publishes the configured key), SPF
of the envelope sender's domain (receivers judge SPF on MAIL FROM, which is the VERP return path
when one is configured, not the From header), and DMARC of the From domain, plus whether SPF can
align with From under that DMARC record. Reading the records is the only I/O, through a resolver
that tests replace; judging them is pure (`judge_dkim`, `judge_spf`, `judge_dmarc`,
`judge_spf_alignment`).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver
from publicsuffixlist import PublicSuffixList

from streamer.config import Config
from streamer.dkim_signing import DkimKeyError, SigningKey, load_key
from streamer.preflight import Finding


class LookupFailed(Exception):
    """The resolver gave no answer (timeout, SERVFAIL): nothing can be said about the record."""


class TxtResolver(Protocol):
    async def txt(self, name: str) -> list[str]:
        """The TXT strings at `name` (each record's chunks joined), [] when there are none;
        raises LookupFailed when the DNS cannot answer."""


class DnsPythonResolver:
    """TXT lookups with dnspython; `nameservers`/`port` point it at another server (tests)."""

    def __init__(self, nameservers: list[str] | None = None, port: int = 53, timeout_s: float = 5.0):
        self._resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self._resolver.nameservers = nameservers
            self._resolver.port = port
        self._resolver.lifetime = timeout_s

    async def txt(self, name: str) -> list[str]:
        try:
            answer = await self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as exc:
            raise LookupFailed(f"{type(exc).__name__}") from None
        return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def resolver_for(server: str | None) -> DnsPythonResolver:
    """`None` → the system's resolver; `"1.1.1.1"`, `"127.0.0.1:5353"`, `"[::1]:53"` → that server."""
    if not server:
        return DnsPythonResolver()
    host, port = server, 53
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53 if not rest else -1
    elif server.count(":") == 1:
        host, _, text = server.partition(":")
        port = int(text) if text.isdigit() else -1
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{server!r} is not an IP address (optionally with :PORT)") from None
    if not 0 < port < 65536:
        raise ValueError(f"{server!r} has no valid port")
    return DnsPythonResolver([host], port)


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def judge_dkim(key: SigningKey, records: list[str]) -> Finding:
    where = f"DKIM {key.dns_name}"
    published = [r for r in records if _tags(r).get("p") is not None or r.lower().startswith("v=dkim1")]
    if not published:
        return Finding(
            "error", f"{where}: no TXT record; receivers cannot verify streamer's signatures. Publish: {key.dns_record}"
        )
    tags = _tags(published[0])
    if len(published) > 1:
        return Finding("error", f"{where}: {len(published)} DKIM records; receivers need exactly one")
    if not tags.get("p"):
        return Finding("error", f"{where}: the key is revoked (empty p=); publish: {key.dns_record}")
    if tags["p"] != key.public_b64:
        return Finding("error", f"{where}: publishes another key than the configured one; publish: {key.dns_record}")
    if tags.get("t", "").split(":").count("y"):
        return Finding("warning", f"{where}: matches the key, but t=y (testing): receivers may ignore failures")
    return Finding("ok", f"{where}: publishes the configured key")


def envelope_sender_domain(config: Config) -> tuple[str, str]:
    """(the domain of the envelope sender streamer sends with, why that one): SPF is checked there."""
    from streamer.message import parse_mailbox

    from_domain = parse_mailbox(config.smtp.from_, "sender")[1].rpartition("@")[2]
    return_path = config.suppression.return_path
    if return_path:
        domain = return_path.rpartition("@")[2].lower()
        return domain, (
            f"the envelope sender's domain: suppression.return_path makes MAIL FROM "
            f"{return_path.rpartition('@')[0]}+<token>@{domain}, and receivers check SPF there"
            + ("" if domain == from_domain else f", not on the From domain {from_domain}")
        )
    return from_domain, (
        "the envelope sender's domain: MAIL FROM is smtp.from, no suppression.return_path being set; "
        "a relay that puts its own return path there is judged on that domain instead"
    )


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """Parsed once (it takes ~50 ms); only `check --online` needs it."""
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """DMARC's organizational domain (RFC 7489 3.2): one label below the public suffix, by the
    Public Suffix List (`publicsuffixlist` ships it), so acme.co.uk is not mistaken for co.uk."""
    return (_public_suffixes().privatesuffix(domain.lower().rstrip(".")) or domain).lower()


def judge_spf_alignment(from_domain: str, envelope_domain: str, dmarc_record: str | None) -> Finding | None:
    """Can SPF pass DMARC for this mail? It needs the MAIL FROM domain aligned with From: the same
    organizational domain (relaxed, the default) or the very domain (aspf=s). None when they are
    the same domain (always aligned)."""
    if envelope_domain == from_domain:
        return None
    where = f"SPF alignment {envelope_domain} / {from_domain}"
    dkim_note = (
        "DMARC can still pass through DKIM alignment (a DKIM signature with d= the From domain or "
        "its organizational domain: a dkim: key here, or your relay's)"
    )
    strict = (_tags(dmarc_record).get("aspf", "r").lower() == "s") if dmarc_record else False
    if organizational_domain(envelope_domain) != organizational_domain(from_domain):
        return Finding(
            "warning",
            f"{where}: the return-path domain is not under the From domain's organizational domain "
            f"{organizational_domain(from_domain)}, so SPF never aligns and cannot make DMARC pass; "
            f"{dkim_note}. To align SPF too, use a return path under {organizational_domain(from_domain)}",
        )
    if strict:
        return Finding(
            "warning",
            f"{where}: the DMARC record says aspf=s (strict): SPF aligns only when MAIL FROM's domain "
            f"is exactly {from_domain}; {dkim_note}",
        )
    return Finding("ok", f"{where}: same organizational domain, so SPF aligns with From (relaxed alignment)")


def judge_spf(domain: str, records: list[str], why: str = "") -> Finding:
    where = f"SPF {domain}" + (f" ({why})" if why else "")
    spf = [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if not spf:
        return Finding(
            "warning",
            f"{where}: no SPF record: add one that lists your SMTP relay, e.g. "
            '"v=spf1 include:<your relay\'s SPF domain> -all"',
        )
    if len(spf) > 1:
        return Finding("error", f"{where}: {len(spf)} SPF records; receivers treat that as a permanent error")
    terms = spf[0].split()
    if terms[-1].lower() in ("+all", "all"):
        return Finding("warning", f'{where}: "{spf[0]}" ends with +all: anyone may send as {domain}')
    return Finding("ok", f'{where}: "{spf[0]}" (check that it covers your SMTP relay)')


def judge_dmarc(domain: str, looked_up: str, records: list[str]) -> Finding:
    where = f"DMARC {domain}"
    dmarc = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if not dmarc:
        return Finding(
            "warning",
            f"{where}: no DMARC record at _dmarc.{domain} or its parent domains: Gmail and "
            f'Yahoo require one from bulk senders; start with "v=DMARC1; p=none; '
            f'rua=mailto:dmarc@{domain}"',
        )
    if len(dmarc) > 1:
        return Finding("error", f"{where}: {len(dmarc)} DMARC records at {looked_up}; receivers ignore them all")
    policy = _tags(dmarc[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Finding("error", f'{where}: {looked_up} has no valid p= tag: "{dmarc[0]}"')
    note = " (monitoring only)" if policy == "none" else ""
    return Finding("ok", f"{where}: p={policy}{note}, from {looked_up}")


async def _dmarc_records(resolver: TxtResolver, domain: str) -> tuple[str, list[str]]:
    """The DMARC record of `domain`, else of its parents (the organizational domain, roughly:
    without the public-suffix list, stop before the last label)."""
    labels = domain.split(".")
    for start in range(0, max(len(labels) - 1, 1)):
        name = "_dmarc." + ".".join(labels[start:])
        records = await resolver.txt(name)
        if any(r.replace(" ", "").lower().startswith("v=dmarc1") for r in records):
            return name, records
    return f"_dmarc.{domain}", []


async def mail_auth_findings(config: Config, resolver: TxtResolver | None = None) -> list[Finding]:
    """What receivers will find in DNS for streamer's mail, and what is missing."""
    from streamer.message import parse_mailbox

    resolver = resolver or DnsPythonResolver()
    from_domain = parse_mailbox(config.smtp.from_, "sender")[1].rpartition("@")[2]
    spf_domain, spf_why = envelope_sender_domain(config)
    findings: list[Finding] = []

    async def lookup(name: str, judge: Callable[[list[str]], Finding]) -> None:
        try:
            findings.append(judge(await resolver.txt(name)))
        except LookupFailed as exc:
            findings.append(Finding("warning", f"DNS {name}: no answer ({exc}); cannot check it from here"))

    for index, key in enumerate(config.dkim):
        try:
            loaded = load_key(key, config.base_dir, f"dkim.{index}")
        except DkimKeyError as exc:
            findings.append(Finding("error", str(exc)))
            continue
        await lookup(loaded.dns_name, functools.partial(judge_dkim, loaded))
    if not config.dkim:
        findings.append(
            Finding(
                "warning",
                f"DKIM {from_domain}: streamer does not sign (no dkim keys): make sure "
                "your SMTP relay signs with d=" + from_domain + " (see README)",
            )
        )
    await lookup(spf_domain, lambda records: judge_spf(spf_domain, records, spf_why))
    dmarc_record = None
    try:
        looked_up, records = await _dmarc_records(resolver, from_domain)
        findings.append(judge_dmarc(from_domain, looked_up, records))
        dmarc = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
        dmarc_record = dmarc[0] if len(dmarc) == 1 else None
    except LookupFailed as exc:
        findings.append(Finding("warning", f"DNS _dmarc.{from_domain}: no answer ({exc}); cannot check it from here"))
    alignment = judge_spf_alignment(from_domain, spf_domain, dmarc_record)
    if alignment is not None:
        findings.append(alignment)
    return findings
