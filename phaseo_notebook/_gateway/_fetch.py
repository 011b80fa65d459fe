"""Fetching an ``audio_url`` without letting the gateway be aimed at private addresses.

Whoever can send a request could otherwise make the gateway fetch from the machine it
runs on or from the network behind it (other local services, ``169.254.169.254`` cloud
metadata). So, unless ``allow_private_urls`` is set:

- every address a host resolves to must be public: not loopback, private, link-local,
  unspecified, multicast, reserved or a metadata address, IPv4 forms embedded in IPv6
  (``::ffff:127.0.0.1``, 6to4, NAT64) included; the IPv4 spellings ``2130706433``,
  ``0x7f.1`` or ``0177.0.0.1`` resolve to what they mean and are refused with it;
- the connection goes to the address that was checked (the host name is resolved once,
  by this module), so a DNS answer that changes between check and connect cannot slip
  past;
- redirects are followed here, one hop at a time, each hop checked the same way, at most
  :data:`MAX_REDIRECTS` of them;
- the gateway's own ``/files/`` route stays reachable (it serves the uploads that
  ``audio_url`` tests and users point at), and so do the origins listed in
  ``allowed_url_origins``.

URLs carrying ``user:password@`` are refused outright (the first one by validation,
a redirect to one here), so credentials are never sent anywhere. Error messages name
the reason, never the bytes that were fetched.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import aiohttp
from yarl import URL

from phaseo_notebook._gateway._app import AudioFetchError, DownloadBuffer

__all__ = [
    "FETCH_TIMEOUT",
    "MAX_REDIRECTS",
    "AudioFetcher",
    "UrlPolicy",
    "address_refusal",
    "parse_origin",
]

logger = logging.getLogger("phaseo_notebook.gateway")

#: Total time allowed to download an ``audio_url``, redirects and name lookups included.
FETCH_TIMEOUT: Final = 30.0
#: Redirects followed before giving up (so at most this many + 1 requests per URL).
MAX_REDIRECTS: Final = 5
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_FETCH_CHUNK: Final = 1 << 16
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba.
_METADATA: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")


def address_refusal(address: str | IPAddress) -> str | None:
    """Why ``address`` may not be fetched from (``"loopback"``, ``"private"``, ...), or None.

    IPv4 addresses carried inside IPv6 ones (mapped, 6to4, Teredo, NAT64) are judged by
    the IPv4 address they reach.

    Examples
    --------
    >>> address_refusal("127.0.0.1"), address_refusal("::ffff:169.254.169.254")
    ('loopback', 'cloud metadata')
    >>> address_refusal("93.184.215.14") is None
    True
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).partition("%")[0])
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL:
            return "private"
        for inner in embedded:
            reason = address_refusal(inner)
            if reason is not None:
                return reason
    if ip in _METADATA:
        return "cloud metadata"
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-public"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    return None


def parse_origin(origin: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an origin such as ``http://10.0.0.5:8000``.

    Raises
    ------
    ValueError
        If it is not an http(s) origin (no path, query, fragment or credentials).

    Examples
    --------
    >>> parse_origin("http://Media.Internal")
    ('http', 'media.internal', 80)
    """
    url = URL(origin.strip())
    if (
        url.scheme not in _DEFAULT_PORTS
        or not url.raw_host
        or url.raw_user is not None
        or url.raw_password is not None
        or url.raw_path not in ("", "/")
        or url.raw_query_string
        or url.raw_fragment
    ):
        raise ValueError(f"not an http(s) origin (scheme://host[:port]): {origin!r}")
    return (url.scheme, url.raw_host.lower(), url.port or _DEFAULT_PORTS[url.scheme])


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which addresses an ``audio_url`` fetch may connect to.

    Parameters
    ----------
    allow_private : bool
        Skip the address checks (tests against servers on 127.0.0.1, trusted networks).
    own_sockets : frozenset of (str, int)
        The gateway's listening ``(address, port)`` pairs: its ``/files/`` route there is
        always allowed.
    trusted_origins : frozenset of (str, str, int)
        ``(scheme, host, port)`` origins allowed whatever they resolve to.

    Examples
    --------
    >>> policy = UrlPolicy(own_sockets=frozenset({("127.0.0.1", 8080)}))
    >>> policy.admit(URL("http://127.0.0.1:8080/files/a.wav"), ["127.0.0.1"])
    ['127.0.0.1']
    >>> policy.admit(URL("http://127.0.0.1:8080/_admin/stats"), ["127.0.0.1"])
    Traceback (most recent call last):
    ...
    phaseo_notebook._gateway._app.AudioFetchError: the host resolves to a loopback address, ...
    """

    allow_private: bool = False
    own_sockets: frozenset[tuple[str, int]] = frozenset()
    trusted_origins: frozenset[tuple[str, str, int]] = frozenset()

    def admit(self, url: URL, addresses: Iterable[str]) -> list[str]:
        """The resolved ``addresses`` of ``url`` to connect to, in order.

        Raises
        ------
        AudioFetchError
            If any address is refused (a host resolving to a public and a private
            address is refused as a whole), or there is none.
        """
        found = list(dict.fromkeys(addresses))
        if not found:
            raise AudioFetchError("the host did not resolve to any address")
        if self.allow_private:
            return found
        scheme = url.scheme
        port = url.port or _DEFAULT_PORTS.get(scheme, 0)
        if (scheme, (url.raw_host or "").lower(), port) in self.trusted_origins:
            return found
        if url.raw_path.startswith("/files/"):
            own = [a for a in found if self._is_own(a, port)]
            # A loopback name may also resolve to a family the gateway does not listen
            # on (localhost -> ::1); connecting only to its own socket is still safe.
            if own and all(address_refusal(a) == "loopback" or a in own for a in found):
                return own
        for address in found:
            reason = address_refusal(address)
            if reason is not None:
                raise AudioFetchError(
                    f"the host resolves to a {reason} address, which this gateway does not "
                    "fetch from (start it with allow_private_urls=True or "
                    "--allow-private-urls to allow private addresses)"
                )
        return found

    def _is_own(self, address: str, port: int) -> bool:
        if (address, port) in self.own_sockets:
            return True
        ip = ipaddress.ip_address(address)
        wildcard = "0.0.0.0" if ip.version == 4 else "::"
        return ip.is_loopback and (wildcard, port) in self.own_sockets


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    port = url.explicit_port
    if port is not None and port != _DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{port}"
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AudioFetcher:
    """Downloads ``audio_url`` bodies under a :class:`UrlPolicy`, hop by hop.

    One aiohttp session is kept for the gateway's lifetime (cookies are never stored,
    proxies from the environment are never used). Call :meth:`close` at shutdown.

    Parameters
    ----------
    policy : UrlPolicy
        What may be connected to; replace :attr:`policy` once the gateway's sockets
        are known.
    timeout : float
        Total seconds for one download, redirects included.

    Examples
    --------
    >>> fetcher = AudioFetcher(UrlPolicy())
    >>> fetcher.policy.allow_private
    False
    """

    def __init__(self, policy: UrlPolicy, *, timeout: float = FETCH_TIMEOUT) -> None:
        self.policy = policy
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the session (a later fetch opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __call__(self, url: str) -> bytes:
        """The body at ``url``.

        Raises
        ------
        AudioFetchError
            Refused, unreachable, an HTTP error, too many redirects, or too slow.
        GatewayError
            413 when the body is over the per-file audio limit.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(URL(url))
        except TimeoutError as err:
            raise AudioFetchError(f"timed out after {self.timeout:g} s") from err
        except aiohttp.ClientError as err:
            raise AudioFetchError(type(err).__name__) from err
        except ValueError as err:  # yarl's verdict on a malformed URL or Location
            raise AudioFetchError(f"malformed URL: {err}") from err

    def _session_for_fetch(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return session

    async def _fetch(self, url: URL) -> bytes:
        for _hop in range(MAX_REDIRECTS + 1):
            if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
                raise AudioFetchError("redirected to a URL that is not absolute http(s)")
            if url.raw_user is not None or url.raw_password is not None:
                raise AudioFetchError("redirected to a URL with credentials (user:password@)")
            addresses = self.policy.admit(url, await self._resolve(url))
            async with await self._get(self._session_for_fetch(), url, addresses) as response:
                status = response.status
                if status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise AudioFetchError(f"HTTP {status} redirect without a Location")
                    url = url.join(URL(location)).with_fragment(None)
                    continue
                if status >= 400:
                    try:
                        phrase = HTTPStatus(status).phrase
                    except ValueError:
                        phrase = ""
                    raise AudioFetchError(f"HTTP {status} {phrase}".strip())
                buffer = DownloadBuffer(response.content_length)
                async for chunk in response.content.iter_chunked(_FETCH_CHUNK):
                    buffer.add(chunk)
                return buffer.getvalue()
        raise AudioFetchError(f"more than {MAX_REDIRECTS} redirects")

    async def _resolve(self, url: URL) -> list[str]:
        host = url.raw_host or ""
        port = url.port or _DEFAULT_PORTS[url.scheme]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            raise AudioFetchError("could not resolve the host name") from err
        return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]

    async def _get(
        self, session: aiohttp.ClientSession, url: URL, addresses: list[str]
    ) -> aiohttp.ClientResponse:
        """GET ``url`` from the first of ``addresses`` that accepts a connection."""
        host = url.raw_host or ""
        server_hostname = host if url.scheme == "https" and not _is_ip(host) else None
        last: aiohttp.ClientConnectorError | None = None
        for address in addresses:
            try:
                # The URL names the checked address itself, so nothing resolves the name
                # again; Host and the TLS name still say what the caller asked for.
                return await session.get(
                    url.with_host(address.partition("%")[0]),
                    headers={"Host": _host_header(url)},
                    allow_redirects=False,
                    server_hostname=server_hostname,
                )
            except aiohttp.ClientConnectorError as err:
                logger.debug("audio_url: could not connect to %s: %s", address, err)
                last = err
        assert last is not None
        raise AudioFetchError("could not connect to the host") from last
