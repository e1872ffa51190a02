"""Who is the client? The socket peer, or what a trusted proxy in front of us says it is.

`X-Forwarded-For` and `Forwarded` are believed only when the socket peer is in
`server.trusted_proxies`: anyone else can write any address there. The chain is read from the
right (the hop next to us) and the first address that is not itself a trusted proxy is the
client, so entries a client wrote on the left of what its proxy appended are never used.
`X-Forwarded-For` wins when both are present (every common proxy appends it; fewer write
`Forwarded`). A hop that is not an IP address (`unknown`, an obfuscated name, garbage) where the
client should be ends the search at the peer: a misconfigured proxy must not let clients choose
their own rate-limit key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> list[Network]:
    """CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses; ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network such as 10.0.0.0/8, 192.0.2.7 or fd00::/8") from None
    return networks


def _address(text: str) -> Address | None:
    """`192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]:443`, quoted or not."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: Sequence[str]) -> list[str]:
    """The `for=` parameters of RFC 7239 `Forwarded` headers, in order."""
    hops = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, item = pair.partition("=")
                if name.strip().lower() == "for":
                    hops.append(item)
    return hops


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def client_address(peer: str | None, headers: Mapping[str, str] | object, networks: Sequence[Network]) -> str | None:
    """The client's address for a request whose socket peer is `peer` (pure).

    `headers` is the request's header multidict (`getall` is used when present, so repeated
    headers are read in order, as one list).
    """
    if not networks or not peer:
        return peer
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, networks):
        return peer
    getall = getattr(headers, "getall", None)

    def values(name: str) -> list[str]:
        if getall is not None:
            return list(getall(name, []))
        value = headers.get(name) if isinstance(headers, Mapping) else None
        return [value] if value else []

    forwarded_for = values("X-Forwarded-For")
    hops = (
        [hop for value in forwarded_for for hop in value.split(",")]
        if forwarded_for
        else _forwarded_for(values("Forwarded"))
    )
    hops = [hop for hop in hops if hop.strip()]
    client = peer_address
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer
        client = address
        if not _trusted(address, networks):
            break
    return str(client)
