"""Which URIs the server may fetch on a user's behalf: no server-side request forgery.

Contract
--------
:class:`UriPolicy.check` is called on every URI the server reads or writes for a user
(``packageUris``, ``jobDir``, ``deploymentUri``, ...) when the request arrives, and
:func:`fetch_http` checks every redirect hop again when the server fetches. Refused with
``INVALID_ARGUMENT`` naming the field:

- a scheme not on the allow-list (``MLE_URI_SCHEMES``; cache wrappers such as ``simplecache::``
  are allowed around allowed schemes);
- ``#fragments``, and ``..`` in a remote path or query;
- local paths (and ``file://``) inside ``MLE_HOME`` (the server's database, tokens, other jobs'
  files), except the upload staging area; and, when ``MLE_STORAGE_ROOTS`` is set, local paths
  outside those roots. Symbolic links are resolved first;
- ``http(s)://`` hosts that are, or resolve to, loopback, link-local (``169.254.0.0/16``, the
  cloud metadata service, ``fd00:ec2::254``), private, shared, multicast or unspecified
  addresses, unless ``MLE_URI_ALLOW_PRIVATE_NETWORKS`` is on.

A name's addresses are checked when it is checked; the fetch itself follows no redirect it has
not checked (DNS answers that change between the check and the connection are not covered).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from mlengine.config import Settings
from mlengine.errors import invalid

#: Chained fsspec wrappers that only cache what an allowed scheme reads.
CACHE_WRAPPERS = frozenset({"simplecache", "filecache", "blockcache"})
MAX_REDIRECTS = 5


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or ip in ipaddress.ip_network("100.64.0.0/10"))


@dataclass(frozen=True)
class UriPolicy:
    schemes: frozenset[str]
    #: Local directories nothing may be read from or written to (the server's home).
    private_dirs: tuple[Path, ...] = ()
    #: Local directories allowed inside ``private_dirs`` (upload staging).
    exceptions: tuple[Path, ...] = ()
    #: When non-empty, local paths must lie under one of these.
    local_roots: tuple[Path, ...] = ()
    allow_private_networks: bool = False
    resolve: bool = field(default=True, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The policy as JSON data, for a worker process that fetches on the server's behalf."""
        return {"schemes": sorted(self.schemes), "privateDirs": [str(p) for p in self.private_dirs],
                "exceptions": [str(p) for p in self.exceptions], "localRoots": [str(p) for p in self.local_roots],
                "allowPrivateNetworks": self.allow_private_networks}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UriPolicy:
        return cls(schemes=frozenset(data["schemes"]), private_dirs=tuple(Path(p) for p in data["privateDirs"]),
                   exceptions=tuple(Path(p) for p in data["exceptions"]),
                   local_roots=tuple(Path(p) for p in data["localRoots"]),
                   allow_private_networks=bool(data["allowPrivateNetworks"]))

    # Local paths ----------------------------------------------------------------------------
    def _check_local(self, path: Path, uri: str, field_name: str) -> None:
        real = Path(os.path.realpath(path))
        if any(real == e or e in real.parents for e in self.exceptions):
            return
        for private in self.private_dirs:
            if real == private or private in real.parents or (real in private.parents):
                raise invalid(field_name, f"{uri} is inside the server's private directory {private}; "
                                          "use a path of your own")
        if self.local_roots and not any(real == r or r in real.parents for r in self.local_roots):
            roots = ", ".join(str(r) for r in self.local_roots)
            raise invalid(field_name, f"{uri} is outside the storage roots of this server ({roots}; "
                                      "MLE_STORAGE_ROOTS)")

    # Network hosts --------------------------------------------------------------------------
    def check_host(self, host: str, uri: str, field_name: str) -> None:
        if self.allow_private_networks:
            return
        host = host.strip("[]")
        try:
            addresses = [host] if _is_ip(host) else (
                sorted({info[4][0] for info in socket.getaddrinfo(host, None)}) if self.resolve else [])
        except OSError as exc:
            raise invalid(field_name, f"{uri}: the host {host!r} cannot be resolved ({exc})") from None
        for address in addresses:
            if not _is_public(str(address)):
                raise invalid(field_name, f"{uri} points at {address}, a loopback, link-local or private "
                                          "address the server does not fetch from "
                                          "(MLE_URI_ALLOW_PRIVATE_NETWORKS enables it)")

    # The check ------------------------------------------------------------------------------
    def check(self, uri: str, field_name: str) -> None:
        from mlengine.storage import uris

        uris.check_usable(uri, field_name)
        if "#" in uri:
            raise invalid(field_name, f"{uri} has a #fragment, which the server does not follow")
        if uris.is_local(uri):
            if "file" not in self.schemes:
                raise invalid(field_name, f"{uri}: local paths are not allowed here (MLE_URI_SCHEMES)")
            self._check_local(uris.local_path(uri), uri, field_name)
            return
        links = uris.chain(uri)
        for link in links[:-1]:
            wrapper = uris.scheme(link) or link.lower()
            if wrapper not in CACHE_WRAPPERS and wrapper not in self.schemes:
                raise invalid(field_name, f"{uri}: {wrapper}:: is not an allowed scheme")
        target = links[-1]
        proto = uris.scheme(target) or "file"
        if proto in ("file", "local"):
            self._check_local(uris.local_path(target), uri, field_name)
            return
        if proto not in self.schemes:
            allowed = ", ".join(sorted(self.schemes))
            raise invalid(field_name, f"{uri}: the {proto}:// scheme is not allowed (allowed: {allowed}; "
                                      "MLE_URI_SCHEMES)")
        parts = urlsplit(target)
        if ".." in parts.path.split("/") or ".." in parts.query:
            raise invalid(field_name, f"{uri} has '..' in its path or query")
        if proto in ("http", "https"):
            self.check_host(parts.hostname or "", uri, field_name)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def uri_policy(settings: Settings) -> UriPolicy:
    """The policy configured by ``MLE_URI_SCHEMES``, ``MLE_STORAGE_ROOTS`` and
    ``MLE_URI_ALLOW_PRIVATE_NETWORKS`` for a server whose home is ``settings.home``."""
    private: list[Path] = [Path(os.path.realpath(settings.home))]
    db_url = settings.resolved_database_url
    if db_url.startswith("sqlite:///"):
        private.append(Path(os.path.realpath(db_url[len("sqlite:///"):])))
    return UriPolicy(
        schemes=frozenset(s.lower() for s in settings.uri_schemes),
        private_dirs=tuple(private),
        exceptions=(Path(os.path.realpath(settings.staging_dir)),),
        local_roots=tuple(Path(os.path.realpath(Path(r).expanduser())) for r in settings.storage_roots),
        allow_private_networks=settings.uri_allow_private_networks,
    )


def is_http(uri: str) -> bool:
    """Whether fetching ``uri`` means an HTTP request (``https://...``, ``simplecache::http://...``)."""
    from mlengine.storage import uris

    return (uris.scheme(uris.chain(uri)[-1]) or "") in ("http", "https")


def fetch_file(uri: str, dest_dir: Path, policy: UriPolicy, field_name: str) -> Path:
    """Copy the file at ``uri`` into ``dest_dir`` after checking it against ``policy`` again (a
    symbolic link or a DNS answer may have changed since the request was accepted); http(s)
    goes through :func:`fetch_http` (every redirect checked, cache wrappers dropped), anything
    else through :func:`mlengine.storage.uris.fetch`."""
    from mlengine.storage import uris

    policy.check(uri, field_name)
    if not is_http(uri):
        return uris.fetch(uri, dest_dir)
    url = uris.chain(uri)[-1]
    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    name = name if name not in ("", ".", "..") else "download"
    dest_dir.mkdir(parents=True, exist_ok=True)
    return fetch_http(url, dest_dir / name, policy, field_name)


def fetch_http(url: str, dest: Path, policy: UriPolicy, field_name: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, following at most :data:`MAX_REDIRECTS` redirects, each one
    checked by ``policy`` before it is followed."""
    import httpx

    current = url
    with httpx.Client(follow_redirects=False, timeout=timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check(current, field_name)
            with client.stream("GET", current) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise invalid(field_name, f"{url}: the server answered {response.status_code}")
                tmp = dest.with_name(dest.name + ".part")
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                os.replace(tmp, dest)
                return dest
    raise invalid(field_name, f"{url}: more than {MAX_REDIRECTS} redirects")
