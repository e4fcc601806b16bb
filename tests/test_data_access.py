"""Data access end to end on the embedded default: real ``afhub up`` with its XRootD origin
and XCache (Debian xrootd 5.5, scitokens plugin, TLS from the facility CA), the demo
provider's WLCG tokens, alice's and bob's real servers.

Reads and writes run as the user's account in the server environment with the environment
the user's kernels get (the server's, with ``BEARER_TOKEN_FILE`` resolved): the XRootD client
finds the token by WLCG discovery and trusts the CA through ``X509_CERT_FILE``/``_DIR``; no
test code handles the delivered token. Tokens the provider would never issue (expired, other
audience) are signed with the facility's key from ``afhub up``'s data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from facility import example_values, wait_for

pytestmark = pytest.mark.integration

SAMPLE = "/public/samples/uproot-HZZ.root"
PROBE = r"""
import json, sys
from XRootD import client
from XRootD.client.flags import OpenFlags
url, mode = sys.argv[1], sys.argv[2]
f = client.File()
st, _ = f.open(url, OpenFlags.DELETE if mode == "write" else OpenFlags.READ)
out = {"ok": st.ok, "errno": st.errno, "message": st.message.strip()}
if st.ok and mode == "write":
    out["ok"] = f.write(b"written by alice\n")[0].ok and f.close()[0].ok
elif st.ok:
    st, data = f.read(0, 4)
    out["head"] = data.hex() if data else None
print(json.dumps(out))
"""
SEEN_SECRETS: set[str] = set()  # every token and key this module saw, for the scan


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    from facility import Facility

    if not shutil.which("xrootd"):
        pytest.fail("xrootd is not installed, but `make test` installs it (make system-deps)")
    values = example_values("local")
    values["dask"]["enabled"] = False  # not needed here (workers come with issue 21's rest)
    facility = Facility(values, tmp_path_factory.mktemp("data-access"))
    facility.start(timeout=120)
    yield facility
    facility.stop()


def server_process(fac, username: str) -> psutil.Process:
    home = str(fac.home(username))
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("jupyterhub-singleuser" in c for c in p.info["cmdline"] or []):
                env = p.environ()
                if env.get("JUPYTERHUB_USER") == username and env.get("HOME") == home:
                    return p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no server process for {username}")


class User:
    """A user with a running server: runs the probe as the user's account with the
    environment the user's kernels get."""

    def __init__(self, fac, name: str):
        self.fac, self.name = fac, name
        self.hs = fac.login_with_server(name)
        assert self.hs.get(f"user/{name}/lab").status_code == 200
        self.status = wait_for(self._token_status, 60, what=f"{name}'s token file")
        self.token_file = self.status["path"]
        self.env = dict(server_process(fac, name).environ())
        self.env["BEARER_TOKEN_FILE"] = self.token_file  # as the server sets it for kernels

    def _token_status(self):
        r = self.hs.server_api("GET", "afhub/api/token")
        return r.status_code == 200 and r.json().get("state") == "ok" and r.json()

    def token(self) -> str:
        text = Path(self.token_file).read_text().strip()
        SEEN_SECRETS.add(text)
        return text

    def token_file_with(self, token: str, label: str) -> str:
        """A 0600 file owned by the user holding ``token`` (the client refuses other modes)."""
        d = self.fac.home(self.name) / ".test-tokens"
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, self.fac.uid(self.name), -1)
        path = d / label
        path.write_text(token)
        os.chmod(path, 0o600)
        os.chown(path, self.fac.uid(self.name), -1)
        return str(path)

    def probe(self, where: str, path: str, mode: str = "read", token_file: str | None = "own"):
        env = dict(self.env)
        if token_file is None:
            env.pop("BEARER_TOKEN_FILE", None)
        elif token_file != "own":
            env["BEARER_TOKEN_FILE"] = token_file
        url = f"{self.env['AFHUB_DATA_' + where.upper()]}//{path.lstrip('/')}"
        uid = self.fac.uid(self.name)
        out = subprocess.run(
            [python(), "-c", PROBE, url, mode],
            env=env,
            cwd=str(self.fac.home(self.name)),
            user=uid,
            group=os.getgid() if uid == os.getuid() else psutil_gid(uid),
            extra_groups=[] if os.geteuid() == 0 else None,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])


def python() -> str:
    prefix = os.environ.get("AFHUB_SERVER_ENV", "/opt/afhub/envs/analysis")
    return os.path.join(prefix, "bin", "python")


def psutil_gid(uid: int) -> int:
    import pwd

    return pwd.getpwuid(uid).pw_gid


def mint(fac, *, subject: str, audience: str, scope: str, lifetime: int, age: int = 0) -> str:
    """A WLCG token signed with the facility's key (what the demo provider signs with)."""
    from afhub.authenticator.wlcg import wlcg_claims
    from authlib.jose import JsonWebKey, jwt

    key_path = fac.data_dir / "idp-signing-key.json"
    jwk = json.loads(key_path.read_text())
    SEEN_SECRETS.add(jwk["d"])
    claims = wlcg_claims(
        issuer=fac.idp_url.rstrip("/"),
        subject=subject,
        audience=audience,
        scope=scope,
        now=time.time() - age,
        lifetime=lifetime,
    )
    key = JsonWebKey.import_key(jwk)
    token = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]}, claims, key).decode()
    SEEN_SECRETS.add(token)
    return token


@pytest.fixture(scope="module")
def alice(fac):
    return User(fac, "alice")


@pytest.fixture(scope="module")
def bob(fac):
    return User(fac, "bob")


def test_servers_get_the_storage_and_ca_through_the_contract(fac, alice):
    data = fac.values["data"]
    root = data["embedded_root"]
    assert alice.env["AFHUB_DATA_CACHE"].startswith("root://127.0.0.1:")
    assert alice.env["AFHUB_DATA_ORIGIN"].startswith("root://127.0.0.1:")
    assert alice.env["X509_CERT_FILE"] == f"{root}/ca/facility-ca.pem"
    assert "BEGIN CERTIFICATE" in Path(alice.env["X509_CERT_FILE"]).read_text()
    assert "BEGIN" not in alice.env.get("BEARER_TOKEN", "")
    # the delivered token is a WLCG-profile access token for the storage audience
    import base64

    token = alice.token()
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert body["aud"] == "afhub-storage" and body["sub"] == "alice"
    assert body["scope"].split() == [
        "storage.read:/public",
        "storage.read:/user/alice",
        "storage.modify:/user/alice",
    ]
    assert body["wlcg.ver"] == "1.0" and body["nbf"] <= time.time() < body["exp"]
    assert {"iss", "iat", "jti"} <= set(body)
    assert alice.status["audience"] == "afhub-storage"


def test_alice_kernel_reads_the_sample_over_root_through_the_cache(fac, alice):
    from kernel_ws import Kernel

    kernel = Kernel(alice.hs)
    result = kernel.json(
        "import json, os, uproot\n"
        f"url = os.environ['AFHUB_DATA_CACHE'] + '/{SAMPLE}'\n"
        "with uproot.open(url) as f:\n"
        "    events = f['events']\n"
        "    n = events.num_entries\n"
        "    px = events['Muon_Px'].array(library='np')\n"
        "print(json.dumps({'url': url, 'n': n, 'muons': int(sum(len(x) for x in px))}))"
    )
    assert result["n"] == 2421 and result["muons"] > 0, result
    # it went through the cache: the cache logged alice's token login and holds the file
    cache_log = storage_log(fac, "cache")
    assert "login as alice" in cache_log
    cached = Path(fac.values["data"]["embedded_root"]) / "cache" / SAMPLE.lstrip("/")
    assert cached.exists()


@pytest.mark.parametrize("where", ["cache", "origin"])
def test_refusals(fac, alice, bob, where):
    # alice's own token reads the public sample; bob's does not reach alice's area
    assert alice.probe(where, SAMPLE)["ok"]
    wrote = alice.probe("origin", "/user/alice/for-bob.txt", mode="write")
    assert wrote["ok"], wrote
    bob.token()
    r = bob.probe(where, "/user/alice/for-bob.txt")
    assert not r["ok"] and "permission denied" in r["message"], r
    # no token at all: the login itself fails (ztn is the only protocol)
    r = alice.probe(where, SAMPLE, token_file=None)
    assert not r["ok"] and "Auth failed" in r["message"], r
    scope = "storage.read:/public storage.read:/user/alice"
    expired = mint(
        fac, subject="alice", audience="afhub-storage", scope=scope, lifetime=60, age=120
    )
    r = alice.probe(where, SAMPLE, token_file=alice.token_file_with(expired, "expired"))
    assert not r["ok"] and "Auth failed" in r["message"], r
    other = mint(
        fac, subject="alice", audience="https://elsewhere.example", scope=scope, lifetime=300
    )
    r = alice.probe(where, SAMPLE, token_file=alice.token_file_with(other, "other-audience"))
    assert not r["ok"] and "permission denied" in r["message"], r
    # a token with the right audience still only reaches its scopes
    public_only = mint(
        fac, subject="alice", audience="afhub-storage", scope="storage.read:/public", lifetime=300
    )
    r = alice.probe(
        where, "/user/alice/for-bob.txt", token_file=alice.token_file_with(public_only, "public")
    )
    assert not r["ok"] and "permission denied" in r["message"], r


def test_writes_to_own_area_only(fac, alice):
    r = alice.probe("origin", "/user/alice/result.txt", mode="write")
    assert r["ok"], r
    written = Path(fac.values["data"]["embedded_root"]) / "export" / "user" / "alice" / "result.txt"
    assert written.read_text() == "written by alice\n"
    r = alice.probe("origin", "/user/bob/intruder.txt", mode="write")
    assert not r["ok"] and "permission denied" in r["message"], r
    assert not (written.parent.parent / "bob" / "intruder.txt").exists()
    r = alice.probe("origin", "/public/samples/overwrite.root", mode="write")
    assert not r["ok"], r
    # her file reads back through the cache
    assert alice.probe("cache", "/user/alice/result.txt")["ok"]


def storage_log(fac, name: str) -> str:
    root = Path(fac.values["data"]["embedded_root"])
    return (root / "log" / f"afhub-{name}" / f"{name}.log").read_text(errors="replace")


def test_storage_runs_unprivileged_and_never_shows_a_token_or_key(fac, alice, bob):
    alice.token(), bob.token()
    keytab = Path(fac.values["data"]["embedded_root"]) / "etc" / "cache.keytab"
    SEEN_SECRETS.add(json.loads((fac.data_dir / "idp-signing-key.json").read_text())["d"])
    host_key = (Path(fac.values["data"]["embedded_root"]) / "etc" / "hostkey.pem").read_text()
    SEEN_SECRETS.add("".join(host_key.strip().splitlines()[1:-1])[:64])
    haystacks = {}
    for name in ("origin", "cache"):
        proc = psutil.Process(fac.pid_of(name))
        assert proc.uids().real != 0 and proc.uids().effective != 0
        haystacks[f"{name} argv"] = "\0".join(proc.cmdline())
        haystacks[f"{name} environment"] = "\n".join(f"{k}={v}" for k, v in proc.environ().items())
        haystacks[f"{name} log"] = storage_log(fac, name)
    haystacks["afhub up log"] = fac.log_text()
    assert "login as alice" in haystacks["origin log"]  # the logs are the real ones
    secrets = {s for s in SEEN_SECRETS if len(s) >= 20}
    assert len(secrets) >= 4
    for label, text in haystacks.items():
        for secret in secrets:
            for piece in (secret, secret[-40:]):
                assert piece not in text, f"a secret appears in the {label}"
    assert oct(keytab.stat().st_mode & 0o777) == "0o600"


# ------------------------------------------------------------------ the sidebar's "test access"


class swapped_token:
    """Alice's server's token file holds ``token`` (None: no file) until the block ends; written
    as the renewer writes it (0600, hers, renamed into place), then put back."""

    def __init__(self, user: User, token: str | None):
        self.user, self.token = user, token

    def _put(self, text: str | None) -> None:
        path = Path(self.user.token_file)
        if text is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(path.name + ".test")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        os.chown(tmp, self.user.fac.uid(self.user.name), -1)
        os.replace(tmp, path)

    def __enter__(self):
        self.saved = Path(self.user.token_file).read_text()
        SEEN_SECRETS.add(self.saved.strip())
        self._put(self.token)

    def __exit__(self, *exc):
        self._put(self.saved)


def access_test(user: User, endpoint: str, path: str | None = None) -> dict:
    """The sidebar's "test access" of ``endpoint`` by ``user``'s server."""
    body = {"endpoint": endpoint, **({"path": path} if path else {})}
    r = user.hs.server_api("POST", "afhub/api/data/test", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_sidebar_route_lists_the_endpoints(alice):
    r = alice.hs.server_api("GET", "afhub/api/data")
    assert r.status_code == 200
    body = r.json()
    assert [e["name"] for e in body["endpoints"]] == ["cache", "origin"]
    assert body["endpoints"][0]["url"] == alice.env["AFHUB_DATA_CACHE"]
    assert body["audience"] == "afhub-storage"
    assert body["test_path"] == SAMPLE


@pytest.mark.parametrize("where", ["cache", "origin"])
def test_sidebar_test_access_reports_the_servers_reason(fac, alice, where):
    r = access_test(alice, where)
    assert (r["ok"], r["reason"], r["path"]) == (True, "ok", SAMPLE), r
    r = access_test(alice, where, "/user/bob/intruder.root")
    assert (r["ok"], r["reason"]) == (False, "not_in_scope"), r
    assert "permission denied" in r["server_message"]
    scope = "storage.read:/public storage.read:/user/alice"
    expired = mint(
        fac, subject="alice", audience="afhub-storage", scope=scope, lifetime=60, age=120
    )
    other = mint(
        fac, subject="alice", audience="https://elsewhere.example", scope=scope, lifetime=300
    )
    for token, reason in ((expired, "expired"), (other, "wrong_audience"), (None, "no_token")):
        with swapped_token(alice, token):
            r = access_test(alice, where)
        assert (r["ok"], r["reason"]) == (False, reason), r
        assert r["server_message"] and r["message"]
    for secret in SEEN_SECRETS:  # no answer carries a token
        assert secret not in json.dumps(r)
    assert access_test(alice, where)["ok"]  # her own token again


def test_sidebar_route_refuses_bad_requests(alice):
    for body, needle in (
        ({"endpoint": "elsewhere"}, "unknown endpoint 'elsewhere'"),
        ({"endpoint": "cache", "path": "/public/x?authz=abc"}, "path:"),
        ({"endpoint": "cache", "path": "relative/x"}, "path:"),
    ):
        r = alice.hs.server_api("POST", "afhub/api/data/test", json=body)
        assert r.status_code == 400 and needle in r.json()["message"], r.text


def test_sidebar_test_access_names_a_server_that_does_not_answer(fac, alice):
    import signal

    pid = fac.pid_of("cache")
    os.kill(pid, signal.SIGSTOP)  # accepts nothing new and answers nothing
    try:
        r = access_test(alice, "cache")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (r["ok"], r["reason"]) == (False, "server_down"), r
    assert r["seconds"] < 30
    assert access_test(alice, "cache")["ok"]
