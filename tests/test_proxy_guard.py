"""``hub_config/proxy_guard.mjs``: the real configurable-http-proxy, run through afhub's guard.

A URL path with malformed percent-encoding (``%80``, a bare ``%``) is answered 400 through the
proxy's own error path (the error target's page), on web and websocket requests alike; every
other request reaches its route exactly as before (the raw path, percent-escapes intact).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from afhub.hub_config.runner import PROXY_GUARD, FreePorts, find_proxy, guarded_proxy_command

pytestmark = pytest.mark.integration


class _Recorder(http.server.ThreadingHTTPServer):
    def __init__(self, body: bytes):
        self.paths: list[str] = []
        self.body = body
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def proxy():
    chp = find_proxy()
    command = guarded_proxy_command(chp)
    if command[1:2] != [PROXY_GUARD]:
        pytest.fail(f"configurable-http-proxy and node are needed (make up-deps): {command}")
    target, errors = _Recorder(b"from the target"), _Recorder(b"the error page")
    with FreePorts() as free:
        port, api_port = free.pick("127.0.0.1"), free.pick("127.0.0.1")
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN="t" * 32)
    proc = subprocess.Popen(
        command
        + ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1"]
        + ["--api-port", str(api_port), "--default-target", target.url]
        + ["--error-target", errors.url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the guarded proxy did not start:\n" + proc.stdout.read())
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", port, target, errors, proc
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    target.shutdown()
    errors.shutdown()
    assert "URIError" not in out and "    at " not in out, out  # no stack trace in its log


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize("path", ["/hub/api/users/%80", "/user/bob/%", "/a/%E0%A4%A", "/%C3/x"])
def test_malformed_path_is_a_400_with_the_error_page(proxy, path):
    url, _, target, errors, _ = proxy
    seen = len(target.paths)
    status, body = _get(url + path)
    assert status == 400
    assert body == b"the error page"
    assert errors.paths and errors.paths[-1].startswith("/400?url=")
    assert len(target.paths) == seen  # never forwarded


@pytest.mark.parametrize("path", ["/x", "/user/b%6fb/api", "/a%25b/%C3%A9", "/q?v=%80"])
def test_other_paths_reach_the_route_unchanged(proxy, path):
    url, _, target, _, _ = proxy
    status, body = _get(url + path)
    assert (status, body) == (200, b"from the target")
    assert target.paths[-1] == path


def test_malformed_websocket_upgrade_is_refused_with_400(proxy):
    _, port, target, _, _ = proxy
    seen = len(target.paths)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"GET /user/bob/%80/api/kernels/x/channels HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        reply = s.recv(200)
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", reply
    assert len(target.paths) == seen


def test_not_chp_runs_unwrapped(tmp_path):
    other = tmp_path / "my-proxy"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert guarded_proxy_command(str(other)) == [str(other)]
