"""Network facts shared by the client and the local gateway (which must not import each other)."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True when ``host`` names only this machine: ``localhost``, 127.0.0.0/8 or ``::1``.

    Examples
    --------
    >>> is_loopback_host("127.0.0.1"), is_loopback_host("0.0.0.0"), is_loopback_host("example.com")
    (True, False, False)
    """
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
