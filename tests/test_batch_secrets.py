"""Secrets never reach the batch scheduler (HTCondor's job ClassAd, Slurm's stored job
environment): the server's hub API token goes to the job in a 0600 file written as the user's
account and read by a ``/bin/sh`` reader in the job (``spawner/batch/secrets.py``).

No HTCondor daemon can run here: the HTCondor submission is checked at one boundary, the
processes the spawner starts (``run_command``: ``sudo ... condor_submit`` and the file write
are recorded with their argv, stdin and environment, and answered with ``condor_submit``'s
usual line); the submit description is parsed by the real ``htcondor2.Submit``. The reader
itself and the scheduler commands' environment run as real processes. The Slurm path is
checked against a real Slurm in ``test_batch_slurm.py``.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess

import pytest
from afhub.spawner.batch import secrets as jobsecrets
from test_batch_translate import ALL_GROUPS, _spawner
from test_profile_list_dropin import MockObject

TOKEN = "f3c1a9e07b5d4c2a8e6f1b3d5c7a9e0b"  # what the hub hands the server


def _hub():
    hub = MockObject()
    hub.public_host, hub.url, hub.base_url = "", "http://127.0.0.1:8081/hub/", "/hub/"
    hub.api_url = "http://127.0.0.1:8081/hub/api"
    return hub


class Recorder:
    """The process boundary: every command the spawner runs, answered like the real tools."""

    def __init__(self, answers):
        self.calls: list[dict] = []
        self.answers = answers

    async def __call__(self, cmd, input=None, env=None):
        self.calls.append({"cmd": cmd, "input": input, "env": dict(env or {})})
        for needle, answer in self.answers:
            if needle in cmd:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return ""

    def find(self, needle):
        return [c for c in self.calls if needle in c["cmd"]]


def _ready(sp, options, recorder):
    sp.hub = _hub()
    sp.user.url = "/user/alice/"
    # the account "alice" need not exist on this machine (its lookup is not tested here)
    sp.user_env = lambda env: {**env, "USER": "alice", "HOME": "/home/alice"}
    sp.api_token = TOKEN
    sp.afhub_apply_resolved(sp.afhub_catalogue().resolve(ALL_GROUPS, options))
    sp.run_command = recorder
    return sp


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
async def test_htcondor_submission_carries_no_secret(profile):
    import htcondor2

    rec = Recorder([("condor_submit", "Submitting job(s).\n1 job(s) submitted to cluster 4127.")])
    sp = _ready(_spawner("CondorProfileSpawner", "htcondor"), {"profile": profile}, rec)
    assert await sp.submit_batch_script() == "4127"

    (submit,) = rec.find("condor_submit")
    sub = htcondor2.Submit(submit["input"])
    assert sub["getenv"].lower() == "true"  # batchspawner's description copies the environment:
    assert TOKEN not in str(dict(sub))  # no token in the description (ClassAd attributes)...
    assert TOKEN not in " ".join(submit["env"].values())  # ...nor in what GetEnv copies
    assert "JUPYTERHUB_API_TOKEN" not in submit["env"] and "JPY_API_TOKEN" not in submit["env"]
    assert "JUPYTERHUB_API_URL" in submit["env"]  # the rest of the server's environment is there
    for call in rec.calls:
        assert TOKEN not in call["cmd"]  # nor in any argv

    # the token went to the file, written as the user's account with stdin only
    (write,) = rec.find(".afhub/batch/")
    assert write["cmd"].startswith("sudo -E -u alice /bin/sh -c ")
    path = sp._afhub_secrets_path
    assert path.startswith("/home/alice/.afhub/batch/.default/") and path.endswith(".env")
    assert write["input"] == f"JPY_API_TOKEN={TOKEN}\nJUPYTERHUB_API_TOKEN={TOKEN}\n"
    assert TOKEN not in str(write["env"])
    # and the job starts through the reader of that file
    args = sub["arguments"]
    assert path in args and "afhub-job" in args and "batchspawner-singleuser" in args


async def test_slurm_exports_the_servers_variables_of_this_start_and_no_secret():
    """``--export`` names the variables of this start's environment (batchspawner computes
    ``keepvars`` once per spawner object, e.g. at a cancel long before a start), not the
    token's: Slurm would store it with the job."""
    rec = Recorder([("sbatch", "4711")])
    sp = _ready(_spawner("SlurmProfileSpawner", "slurm"), {"profile": "cpu"}, rec)
    sp.req_keepvars = "PATH,STALE_NAME"  # computed before the server existed
    sp.req_keepvars_extra = "SITE_VAR"
    assert await sp.submit_batch_script() == "4711"
    (submit,) = rec.find("sbatch")
    (export,) = [x for x in submit["input"].splitlines() if x.startswith("#SBATCH --export=")]
    names = export.removeprefix("#SBATCH --export=").split(",")
    assert set(names) == set(submit["env"]) | {"SITE_VAR"}
    assert "JUPYTERHUB_API_URL" in names and "STALE_NAME" not in names
    assert not {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"} & set(names)
    assert TOKEN not in submit["input"] and TOKEN not in str(submit["env"])


async def test_failed_submission_removes_the_credentials_file():
    rec = Recorder([("condor_submit", RuntimeError("ERROR: Failed to connect to local queue"))])
    sp = _ready(_spawner("CondorProfileSpawner", "htcondor"), {"profile": "cpu"}, rec)
    with pytest.raises(Exception, match="HTCondor did not accept the job"):
        await sp.submit_batch_script()
    path = rec.find("cat > ")[0]["cmd"].split("cat > ")[1].rstrip("'")
    assert rec.calls[-1]["cmd"] == f"sudo -E -u alice rm -f {path}"


def test_reader_exports_deletes_and_execs(tmp_path):
    """The job's side, with a real /bin/sh and the exact quoting of the batch script."""
    home = tmp_path / "home"
    path = jobsecrets.secrets_path(str(home), "", "0123abcd")
    script = jobsecrets.write_command(path)
    secret = {"JUPYTERHUB_API_TOKEN": TOKEN, "JPY_API_TOKEN": TOKEN, "ODD_SECRET": "a b'c\"$x"}
    subprocess.run(script, shell=True, input=jobsecrets.secrets_text(secret), text=True, check=True)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / ".afhub" / "batch").st_mode) == 0o700

    argv = jobsecrets.reader_argv(path, ["env"])
    line = " ".join(shlex.quote(a) for a in argv)  # as cmd_formatted_for_batch writes it
    out = subprocess.run(line, shell=True, capture_output=True, text=True, env={}, check=True)
    env = dict(x.split("=", 1) for x in out.stdout.splitlines() if "=" in x)
    assert env["JUPYTERHUB_API_TOKEN"] == TOKEN and env["ODD_SECRET"] == "a b'c\"$x"
    assert not os.path.exists(path)  # read once, then gone

    again = subprocess.run(line, shell=True, capture_output=True, text=True, env={})
    assert again.returncode == 1 and "credentials file" in again.stderr


def _condor_arguments(value: str) -> list[str]:
    """argv from a submit description's ``Arguments = "..."`` in HTCondor's documented new
    syntax (condor_submit manual: double quotes around the whole; "" is a literal "; white
    space separates; single quotes group, '' inside them is a literal ')."""
    assert value.startswith('"') and value.endswith('"')
    text = value[1:-1].replace('""', '"')
    args, cur, quoted, i, started = [], "", False, 0, False
    while i < len(text):
        ch = text[i]
        if ch == "'" and quoted and text[i + 1 : i + 2] == "'":
            cur, i = cur + "'", i + 2
            continue
        if ch == "'":
            quoted, started = not quoted, True
        elif ch.isspace() and not quoted:
            if started:
                args.append(cur)
            cur, started = "", False
        else:
            cur, started = cur + ch, True
        i += 1
    if started:
        args.append(cur)
    return args


async def test_condor_arguments_run_the_reader_as_written(tmp_path):
    """The HTCondor job's argv, decoded as HTCondor does and run by a real /bin/sh: the
    reader gets the file, exports the token and execs the command (``env`` here)."""
    import htcondor2

    path = jobsecrets.secrets_path(str(tmp_path), "", "0badc0de")
    subprocess.run(
        jobsecrets.write_command(path), shell=True, text=True, check=True,
        input=jobsecrets.secrets_text({"JUPYTERHUB_API_TOKEN": TOKEN}),
    )  # fmt: skip
    sp = _spawner("CondorProfileSpawner", "htcondor")
    sp.cmd, sp._afhub_secrets_path = ["env"], path
    sp.args = ["QUOTED_ARG='a b\"c'"]  # an argument with quotes and a space (env sets it)
    description = await sp._get_batch_script(
        **{**sp.afhub_subvars(), "cmd": sp.cmd_formatted_for_batch()}
    )
    value = dict(htcondor2.Submit(description))["Arguments"]
    argv = _condor_arguments(value)
    assert argv[0] == "-c" and len(argv) == 2
    out = subprocess.run(["/bin/sh", *argv], capture_output=True, text=True, env={}, check=True)
    lines = out.stdout.splitlines()
    assert f"JUPYTERHUB_API_TOKEN={TOKEN}" in lines and "QUOTED_ARG='a b\"c'" in lines
    assert not os.path.exists(path)


def test_a_new_start_removes_the_servers_earlier_files(tmp_path):
    first = jobsecrets.secrets_path(str(tmp_path), "", "00000001")
    other = jobsecrets.secrets_path(str(tmp_path), "gpu", "00000002")
    second = jobsecrets.secrets_path(str(tmp_path), "", "00000003")
    for p in (first, other, second):
        subprocess.run(jobsecrets.write_command(p), shell=True, input="A_TOKEN=x\n", text=True)
    assert not os.path.exists(first) and os.path.exists(other) and os.path.exists(second)


@pytest.mark.parametrize(
    "env, secret",
    [
        ({"JUPYTERHUB_API_TOKEN": "t", "JUPYTERHUB_API_URL": "u"}, {"JUPYTERHUB_API_TOKEN"}),
        ({"JPY_API_TOKEN": "t", "PATH": "/bin"}, {"JPY_API_TOKEN"}),
        ({"BEARER_TOKEN_FILE": "/home/a/bt", "X_PASSWORD": "p"}, {"X_PASSWORD"}),
        ({"PLAIN": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.sig"}, {"PLAIN"}),  # a JWT value
    ],
)
def test_split_env(env, secret):
    public, hidden = jobsecrets.split_env(env)
    assert set(hidden) == secret and set(public) == set(env) - secret


@pytest.mark.parametrize(
    "call",
    [
        lambda: jobsecrets.secrets_text({"A": "x\ny"}),
        lambda: jobsecrets.secrets_text({"A B": "x"}),
        lambda: jobsecrets.secrets_path("/home/a b", "", "00ff00ff"),
        lambda: jobsecrets.secrets_path("/home/../etc", "", "00ff00ff"),
        lambda: jobsecrets.secrets_path("/home/a", "", "zz"),
        lambda: jobsecrets.write_command("/etc/passwd"),
    ],
)
def test_refused(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    "name, label", [("", ".default"), ("gpu", "gpu"), (".default", ".s"), ("a/b", ".s")]
)
def test_server_label(name, label):
    got = jobsecrets.server_label(name)
    assert got == label if label != ".s" else (got.startswith(".") and got != ".default")


async def test_scheduler_commands_never_get_the_hubs_environment(monkeypatch):
    """squeue/scancel/condor_q run as the user (``sudo -E``): the hub's own secrets in its
    environment must not reach them. A real process prints what it got."""
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "hub-secret-crypt-key")
    monkeypatch.setenv("AFHUB_OIDC_CLIENT_SECRET", "hub-secret-client")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/test.conf")
    sp = _spawner("SlurmProfileSpawner", "slurm")
    out = await sp.run_command("env")
    assert "hub-secret" not in out
    assert "SLURM_CONF=/etc/slurm/test.conf" in out and "PATH=" in out


async def test_unwritable_home_is_a_clear_error_and_nothing_is_submitted():
    rec = Recorder([("cat > ", RuntimeError("/bin/sh: 1: cannot create /home/alice/x: Read-only file system"))])  # fmt: skip
    sp = _ready(_spawner("SlurmProfileSpawner", "slurm"), {"profile": "cpu"}, rec)
    with pytest.raises(Exception) as err:
        await sp.submit_batch_script()
    assert err.value.jupyterhub_message == (
        "Your server's credentials could not be written to /home/alice/.afhub/batch/.default: "
        "/bin/sh: 1: cannot create /home/alice/x: Read-only file system"
    )
    assert not rec.find("sbatch") and not sp.job_id
