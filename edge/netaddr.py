"""This machine's own IP addresses, read from the kernel's tables: no packet is sent.

For the log line that tells a user which URL to open from another device when the web page is
bound to 0.0.0.0 or ::. Linux only (/proc/net); elsewhere the lists are empty.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def ipv4_addresses(fib_trie: Path = FIB_TRIE) -> list[str]:
    """Local IPv4 addresses (the `/32 host LOCAL` entries), loopback left out."""
    try:
        lines = fib_trie.read_text().splitlines()
    except OSError:
        return []
    found = []
    for prev, line in zip(lines, lines[1:], strict=False):
        if line.strip() == "/32 host LOCAL" and "|--" in prev:
            addr = prev.split("|--", 1)[1].strip()
            if not ipaddress.ip_address(addr).is_loopback and addr not in found:
                found.append(addr)
    return found


def ipv6_addresses(if_inet6: Path = IF_INET6) -> list[str]:
    """Global IPv6 addresses; loopback and link-local (which need a %zone in a URL) left out."""
    try:
        lines = if_inet6.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        if not (addr.is_loopback or addr.is_link_local) and str(addr) not in found:
            found.append(str(addr))
    return found


def lan_urls(host: str, port: int) -> list[str]:
    """http://ADDR:PORT/ for each address a wildcard bind (0.0.0.0 or ::) answers on."""
    if host == "0.0.0.0":
        return [f"http://{a}:{port}/" for a in ipv4_addresses()]
    if host == "::":  # dual-stack on Linux by default
        return ([f"http://{a}:{port}/" for a in ipv4_addresses()]
                + [f"http://[{a}]:{port}/" for a in ipv6_addresses()])
    return []
