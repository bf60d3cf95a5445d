"""The URI policy: no server-side request forgery, nothing read from the server's home."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlengine.config import load_settings
from mlengine.errors import MLEngineError
from mlengine.storage import policy as policy_module
from mlengine.storage.policy import UriPolicy, fetch_http, uri_policy


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "staging" / "abc").mkdir(parents=True)
    (home / "staging" / "abc" / "pkg.tar.gz").write_bytes(b"x")
    (home / "admin_token").write_text("secret")
    return home


def refused(policy: UriPolicy, uri: str, needle: str) -> None:
    with pytest.raises(MLEngineError) as info:
        policy.check(uri, "packageUris[0]")
    assert "packageUris[0]" in info.value.message and needle in info.value.message, info.value.message


def test_local_paths_in_the_servers_home_are_refused(home: Path, tmp_path: Path) -> None:
    policy = uri_policy(load_settings(home=home))
    refused(policy, str(home / "admin_token"), "private directory")
    refused(policy, f"file://{home}/mlengine.db", "private directory")
    refused(policy, str(home), "private directory")
    refused(policy, str(tmp_path), "private directory")  # an ancestor: copying it copies the home
    link = tmp_path / "innocent"
    link.symlink_to(home / "admin_token")
    refused(policy, str(link), "private directory")
    policy.check(str(home / "staging" / "abc" / "pkg.tar.gz"), "f")  # uploads land there
    elsewhere = tmp_path / "data" / "pkg.tar.gz"
    policy.check(str(elsewhere), "f")


def test_storage_roots(home: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    policy = uri_policy(load_settings(home=home, storage_roots=(str(tmp_path / "data"),)))
    policy.check(str(tmp_path / "data" / "x.tar.gz"), "f")
    refused(policy, str(tmp_path / "other" / "x.tar.gz"), "outside the storage roots")


@pytest.mark.parametrize(("uri", "needle"), [
    ("ftp://example.com/p.tar.gz", "not allowed"),
    ("sftp://example.com/p.tar.gz", "sftp://"),
    ("https://example.com/p.tar.gz#frag", "fragment"),
    ("https://example.com/a/p.tar.gz?x=../../etc", "'..'"),
    ("memory://bucket/../other/p.tar.gz", "'..'"),
    ("http://127.0.0.1:8080/p.tar.gz", "127.0.0.1"),
    ("http://localhost/p.tar.gz", "loopback"),
    ("http://169.254.169.254/computeMetadata/v1/", "169.254.169.254"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    ("http://10.1.2.3/p.tar.gz", "private"),
    ("http://[::ffff:127.0.0.1]/p.tar.gz", "127.0.0.1"),
    ("http://0.0.0.0/p.tar.gz", "0.0.0.0"),
])
def test_remote_uris_refused(home: Path, uri: str, needle: str) -> None:
    refused(uri_policy(load_settings(home=home)), uri, needle)


def test_private_networks_when_allowed(home: Path) -> None:
    policy = uri_policy(load_settings(home=home, uri_allow_private_networks=True))
    policy.check("http://127.0.0.1:8080/p.tar.gz", "f")
    refused(uri_policy(load_settings(home=home, uri_schemes=("file",))), "https://example.com/p.tar.gz",
            "not allowed")


@pytest.fixture
def redirector() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.2 that redirects /pkg to a server on 127.0.0.1 (the 'inside')."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(f"{self.server.server_address[0]}{self.path}")
            if self.path == "/pkg":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{inside.server_address[1]}/secret")
                self.end_headers()
            else:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"inside data")

        def log_message(self, *args: object) -> None:
            pass

    outside = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    inside = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    for srv in (outside, inside):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{outside.server_address[1]}/pkg", hits
    for srv in (outside, inside):
        srv.shutdown()
        srv.server_close()


def test_redirects_to_private_addresses_are_not_followed(home: Path, tmp_path: Path,
                                                         redirector: tuple[str, list[str]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url, hits = redirector
    real = policy_module._is_public
    # Pretend 127.0.0.2 is a public address, so the first hop is allowed and the redirect is not.
    monkeypatch.setattr(policy_module, "_is_public", lambda a: a == "127.0.0.2" or real(a))
    policy = uri_policy(load_settings(home=home))
    dest = tmp_path / "pkg.tar.gz"
    with pytest.raises(MLEngineError, match="127.0.0.1"):
        fetch_http(url, dest, policy, "packageUris[0]")
    assert hits == ["127.0.0.2/pkg"] and not dest.exists()
    allowing = uri_policy(load_settings(home=home, uri_allow_private_networks=True))
    fetch_http(url, dest, allowing, "packageUris[0]")
    assert dest.read_bytes() == b"inside data" and os.path.getsize(dest) == 11
