"""Batch backends, pure parts: profile -> Slurm/HTCondor requests, the Apptainer command, the
scripts batchspawner submits, and refusal of anything that could change a script's lines.

Tables read as the specification. The HTCondor submit descriptions are parsed with the real
``htcondor`` bindings (``htcondor2.Submit``; no HTCondor daemon can be installed here), for
every profile of the shipped HTCondor example. The Slurm scripts go to a real Slurm in
``test_batch_slurm.py``.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from afhub.hub_config import apply
from afhub.hub_config.values import load_file, validate
from afhub.spawner.profiles import Catalogue, OptionsError
from afhub.spawner.translations.apptainer import ApptainerSettings, image_source, server_command
from afhub.spawner.translations.batchfields import runtime_seconds
from afhub.spawner.translations.htcondor import CondorSettings, condor_request
from afhub.spawner.translations.slurm import SlurmSettings, slurm_request
from afhub.spawner.translations.units import parse_bytes
from auth_helpers import MemoryUser
from facility import EXAMPLES
from traitlets.config import Config

CATALOGUE = yaml.safe_load(
    r"""
images:
  - {name: el9, image: registry.example.org/af/el9:1, archs: [x86_64, aarch64]}
  - {name: cuda, image: docker://registry.example.org/af/cuda:12, gpu: true}
  - {name: cvmfs, image: /cvmfs/unpacked.cern.ch/registry.hub.docker.com/atlas/athanalysis:25.2}
  - {name: sif, image: /sdf/images/root-6.32.sif}
profiles:
  - display_name: Plain
    slug: plain
  - display_name: CPU
    slug: cpu
    image: el9
    resources: {cpu: 2.5, memory: 8Gi}
    batch: {partition: milano}
  - display_name: ARM
    slug: arm
    image: el9
    resources: {cpu: 4, memory: 4G, arch: aarch64}
  - display_name: GPU
    slug: gpu
    image: cuda
    resources: {cpu: 8, memory: 64Gi, gpu: {count: 1, type: a100}}
    batch: {partition: ampere}
    profile_options:
      gpus:
        display_name: GPUs
        choices:
          one: {display_name: one}
          two: {display_name: two, resources: {gpu: {count: 2}}, batch: {qos: gpu-large, runtime: "1-00:00:00"}}
          any: {display_name: any type, resources: {gpu: {count: 1, type: ""}}}
  - display_name: CVMFS
    slug: cvmfs
    image: cvmfs
  - display_name: SIF
    slug: sif
    image: sif
  - display_name: Custom
    slug: custom
    profile_options:
      image:
        display_name: Image
        unlisted_choice:
          enabled: true
          allowed_registries: [registry.example.org, /cvmfs/unpacked.cern.ch]
          image: {archs: [x86_64]}
      account:
        display_name: Account
        choices:
          default: {display_name: default}
        unlisted_choice:
          enabled: true
          batch: {account: "{value}"}
      runtime:
        display_name: Run time
        choices:
          default: {display_name: default}
        unlisted_choice:
          enabled: true
          batch: {runtime: "{value}"}
      where:
        display_name: Constraint
        choices:
          any: {display_name: any}
        unlisted_choice:
          enabled: true
          batch: {constraint: "{value}"}
"""
)
CAT = Catalogue(CATALOGUE["images"], CATALOGUE["profiles"])
SU = ["batchspawner-singleuser", "jupyterhub-singleuser"]
APPTAINER = ["apptainer", "exec", "--bind", "/cvmfs"]
NV = ["apptainer", "exec", "--nv", "--bind", "/cvmfs"]


def resolve(options):
    return CAT.resolve([], options)


BASE = {
    "partition": "",
    "account": "",
    "qos": "",
    "reservation": "",
    "runtime": "08:00:00",
    "nprocs": "",
    "memory": "",
    "gres": "",
    "options": "",
}

SLURM_CASES = [
    ({"profile": "plain"}, {}, SU),
    (
        {"profile": "cpu"},
        {"partition": "milano", "nprocs": "3", "memory": "8192M"},
        [*APPTAINER, "docker://registry.example.org/af/el9:1", *SU],
    ),
    (
        {"profile": "arm"},
        {"nprocs": "4", "memory": "3815M", "options": "--constraint=arm64"},
        [*APPTAINER, "docker://registry.example.org/af/el9:1", *SU],
    ),
    (
        {"profile": "gpu"},
        {"partition": "ampere", "nprocs": "8", "memory": "65536M", "gres": "gpu:nvidia_a100:1"},
        [*NV, "docker://registry.example.org/af/cuda:12", *SU],
    ),
    (
        {"profile": "gpu", "gpus": "two"},
        {
            "partition": "ampere",
            "qos": "gpu-large",
            "runtime": "1-00:00:00",
            "nprocs": "8",
            "memory": "65536M",
            "gres": "gpu:nvidia_a100:2",
        },
        [*NV, "docker://registry.example.org/af/cuda:12", *SU],
    ),
    (
        {"profile": "gpu", "gpus": "any"},
        {"partition": "ampere", "nprocs": "8", "memory": "65536M", "gres": "gpu:1"},
        [*NV, "docker://registry.example.org/af/cuda:12", *SU],
    ),
    (
        {"profile": "cvmfs"},
        {},
        [*APPTAINER, "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/atlas/athanalysis:25.2", *SU],
    ),
    ({"profile": "sif"}, {}, [*APPTAINER, "/sdf/images/root-6.32.sif", *SU]),
    (
        {
            "profile": "custom",
            "image--unlisted-choice": "registry.example.org/me/img:2",
            "account--unlisted-choice": "atlas:usatlas",
            "runtime--unlisted-choice": "02:30:00",
            "where--unlisted-choice": "skylake|milan",
        },
        {
            "account": "atlas:usatlas",
            "runtime": "02:30:00",
            "options": "--constraint=(skylake|milan)",
        },
        [*APPTAINER, "docker://registry.example.org/me/img:2", *SU],
    ),
]


@pytest.mark.parametrize("options, req, cmd", SLURM_CASES)
def test_slurm_request(options, req, cmd):
    settings = SlurmSettings(gpu_types={"a100": "nvidia_a100"}, arch_features={"aarch64": "arm64"})
    out = slurm_request(resolve(options), settings=settings)
    assert dict(out.req) == {**BASE, **req}
    assert list(out.cmd) == cmd
    assert out.env["AFHUB_PROFILE"] == options["profile"]


def test_slurm_backend_defaults_and_environment_prefix():
    settings = SlurmSettings(
        partition="roma",
        account="hep:default",
        qos="normal",
        runtime="12:00:00",
        environment="/opt/env",
    )
    out = slurm_request(resolve({"profile": "plain"}), settings=settings)
    assert {k: out.req[k] for k in ("partition", "account", "qos", "runtime")} == {
        "partition": "roma",
        "account": "hep:default",
        "qos": "normal",
        "runtime": "12:00:00",
    }
    assert list(out.cmd) == [
        "/opt/env/bin/batchspawner-singleuser",
        "/opt/env/bin/jupyterhub-singleuser",
    ]
    # a profile's batch values replace the backend's
    assert (
        slurm_request(resolve({"profile": "cpu"}), settings=settings).req["partition"] == "milano"
    )


D2H = "allowed_job_duration = 7200"  # the backend's runtime, 02:00:00
GPU_LINES = [
    'require_gpus = DeviceName == "NVIDIA A100-SXM4-80GB"',
    'requirements = (Arch == "X86_64")',
]
CONDOR_CASES = [
    ({"profile": "plain"}, "1", "2048", [D2H]),
    ({"profile": "cpu"}, "3", "8192", [D2H]),  # multi-arch image: no Arch requirement
    ({"profile": "arm"}, "4", "3815", ['requirements = (Arch == "aarch64")', D2H]),
    ({"profile": "gpu"}, "8", "65536", ["request_gpus = 1", *GPU_LINES, D2H]),
    (
        {"profile": "gpu", "gpus": "two"},
        "8",
        "65536",
        ["request_gpus = 2", *GPU_LINES, "allowed_job_duration = 86400"],
    ),
]


@pytest.mark.parametrize("options, cpus, memory, lines", CONDOR_CASES)
def test_condor_request(options, cpus, memory, lines):
    settings = CondorSettings(gpu_types={"a100": "NVIDIA A100-SXM4-80GB"}, runtime="02:00:00")
    out = condor_request(resolve(options), username="alice", settings=settings)
    assert out.req["nprocs"] == cpus and out.req["memory"] == memory
    assert out.req["options"].splitlines() == lines


def test_condor_requirements_and_accounting_group():
    settings = CondorSettings(
        requirements="TARGET.HasCVMFS =?= true", accounting_group="group_atlas"
    )
    out = condor_request(resolve({"profile": "arm"}), username="alice", settings=settings)
    assert out.req["options"].splitlines() == [
        'requirements = (Arch == "aarch64") && (TARGET.HasCVMFS =?= true)',
        "accounting_group = group_atlas",
        "accounting_group_user = alice",
        "allowed_job_duration = 28800",
    ]


APPTAINER_CASES = [
    ("docker://ghcr.io/org/img:1.0", "docker://ghcr.io/org/img:1.0"),
    ("ghcr.io/org/img:1.0", "docker://ghcr.io/org/img:1.0"),
    ("python:3.11", "docker://python:3.11"),
    ("registry:5000/a/b@sha256:" + "a" * 64, "docker://registry:5000/a/b@sha256:" + "a" * 64),
    ("oras://ghcr.io/org/img.sif:1", "oras://ghcr.io/org/img.sif:1"),
    (
        "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/a/b:1",
        "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/a/b:1",
    ),
    ("/images/root.sif", "/images/root.sif"),
]


@pytest.mark.parametrize("ref, source", APPTAINER_CASES)
def test_image_source(ref, source):
    assert image_source(ref) == source


BAD_IMAGES = [
    "",
    " ghcr.io/a/b",
    "ghcr.io/a/b c",
    "ghcr.io/a/b;rm -rf ~",
    "ghcr.io/a/$(id)",
    "ghcr.io/a/`id`",
    "ghcr.io/a/b\n#SBATCH --account=other",
    "http://evil/x",
    "library://x/y",
    "/cvmfs/../etc/shadow",
    "/cvmfs//x",
    "relative/../x",
    "/images/a b.sif",
    "--nv",
]


@pytest.mark.parametrize("ref", BAD_IMAGES)
def test_image_source_refuses(ref):
    with pytest.raises(OptionsError) as e:
        image_source(ref, field="image--unlisted-choice")
    assert e.value.field == "image--unlisted-choice"


def test_server_command_gpu_binds_extra_args():
    settings = ApptainerSettings(
        command="/usr/bin/apptainer", binds=("/cvmfs", "/data:/data:ro"), extra_args=("--contain",)
    )
    cmd = server_command(
        singleuser=["jupyterhub-singleuser"], image="/i.sif", gpu=True, apptainer=settings
    )
    assert cmd == [
        "/usr/bin/apptainer", "exec", "--nv", "--bind", "/cvmfs", "--bind", "/data:/data:ro",
        "--contain", "/i.sif", "batchspawner-singleuser", "jupyterhub-singleuser",
    ]  # fmt: skip
    # host environment reaches the server (JUPYTERHUB_*, AFHUB_* for kernel discovery)
    assert "--cleanenv" not in cmd and "-e" not in cmd


@pytest.mark.parametrize(
    "text, seconds",
    [("00:00:01", 1), ("08:00:00", 28800), ("1-00:00:00", 86400), ("2-12:30:15", 217815)],
)
def test_runtime_seconds(text, seconds):
    assert runtime_seconds(text) == seconds


# ---- tampering: nothing that changes a script's lines gets through -------------------------

TAMPER = [
    ("account--unlisted-choice", "atlas\n#SBATCH --partition=admin"),
    ("account--unlisted-choice", "atlas #SBATCH --qos=high"),
    ("account--unlisted-choice", "atlas;id"),
    ("account--unlisted-choice", "$(id)"),
    ("account--unlisted-choice", "`id`"),
    ("account--unlisted-choice", "a|b"),
    ("account--unlisted-choice", "a>b"),
    ("account--unlisted-choice", "a'b"),
    ("account--unlisted-choice", 'a"b'),
    ("account--unlisted-choice", "+Owner=root"),
    ("account--unlisted-choice", 'a\r\n+AccountingGroup = "x"'),
    ("runtime--unlisted-choice", "08:00:00\n#SBATCH --qos=high"),
    ("runtime--unlisted-choice", "99:99:99"),
    ("runtime--unlisted-choice", "8h"),
    ("where--unlisted-choice", "a&b;id"),
    ("where--unlisted-choice", "$(id)"),
    ("where--unlisted-choice", "a b"),
    ("image--unlisted-choice", "registry.example.org/a:1\n+Requirements = True"),
    ("image--unlisted-choice", "registry.example.org/a:1;id"),
    ("image--unlisted-choice", "registry.example.org/$(id):1"),
]


@pytest.mark.parametrize("key, text", TAMPER)
@pytest.mark.parametrize("backend", ["slurm", "htcondor"])
def test_tampered_options_are_refused_naming_the_field(key, text, backend):
    def translate():
        good = {"image--unlisted-choice": "registry.example.org/a:1"}
        r = resolve({"profile": "custom", **good, key: text})
        if backend == "slurm":
            return slurm_request(r)
        return condor_request(r, username="alice")

    with pytest.raises(OptionsError) as e:
        translate()
    assert e.value.field == key


# ---- the scripts batchspawner submits ------------------------------------------------------


def _spawner(cls_name: str, example: str, **traits):
    """An afhub batch spawner configured from a shipped example exactly as the hub does."""
    from afhub.spawner import batch

    c = Config()
    apply.configure(
        c,
        load_file(str(EXAMPLES / f"{example}.yaml")),
        data_dir="/nonexistent",
        environ={"AFHUB_OIDC_CLIENT_SECRET": "x"},
    )
    sp = getattr(batch, cls_name)(config=c, user=MemoryUser("alice", None, groups=ALL_GROUPS))
    sp.req_username, sp.req_homedir, sp.req_keepvars = (
        "alice",
        "/home/alice",
        "PATH,JUPYTERHUB_API_TOKEN",
    )
    for k, v in traits.items():
        setattr(sp, k, v)
    return sp


ALL_GROUPS = ("af-users", "af-gpu", "af-gpu-large")


async def _script(sp, options) -> str:
    sp.afhub_apply_resolved(sp.afhub_catalogue().resolve(ALL_GROUPS, options))
    subvars = sp.afhub_subvars()
    subvars["cmd"] = sp.cmd_formatted_for_batch()
    return await sp._get_batch_script(**subvars)


def _profile_options(example: str):
    values = load_file(str(EXAMPLES / f"{example}.yaml"))
    out = []
    for p in values["profiles"]:
        out.append({"profile": p["slug"]})
        for name, opt in (p.get("profile_options") or {}).items():
            for slug in opt.get("choices") or {}:
                out.append({"profile": p["slug"], name: slug})
    return out


@pytest.mark.parametrize("options", _profile_options("htcondor"), ids=str)
async def test_htcondor_example_submit_descriptions_parse(options):
    """Every profile/choice of the HTCondor example -> a submit description HTCondor accepts."""
    import htcondor2

    sp = _spawner("CondorProfileSpawner", "htcondor")
    text = await _script(sp, options)
    sub = htcondor2.Submit(text)
    keys = {k.lower(): v for k, v in dict(sub).items()}
    r = sp.afhub_state.resolved.resources
    assert keys["requestcpus"] == str(int(r.cpu))
    assert int(keys["requestmemory"]) == parse_bytes(r.memory) // 2**20  # MiB
    assert keys["accounting_group_user"] == "alice"
    assert keys["accounting_group"] == (
        "group_atlas.ml" if options.get("gpu") == "a100" else "group_atlas.analysis"
    )
    assert keys["allowed_job_duration"] == "28800"
    assert "TARGET.HAS_CVMFS_unpacked_cern_ch =?= true" in keys["requirements"]
    if r.gpu_count:
        assert keys["request_gpus"] == str(r.gpu_count)
        device = {"t4": "Tesla T4", "a100": "NVIDIA A100-SXM4-40GB"}[r.gpu_type]
        assert keys["require_gpus"] == f'DeviceName == "{device}"'
    else:
        assert "request_gpus" not in keys
    arch = {"x86_64": "X86_64", "aarch64": "aarch64", None: None}[sp.afhub_state.resolved.arch]
    if arch:
        assert f'(Arch == "{arch}")' in keys["requirements"]
    else:  # a multi-arch image runs anywhere
        assert "Arch" not in keys["requirements"]
    # the command runs in the profile's image, GPU profiles with --nv
    args = keys["arguments"]
    assert "apptainer exec" in args and ("--nv" in args) == bool(r.gpu_count)
    assert sp.afhub_state.resolved.image.ref.removeprefix("docker://") in args
    # no custom attributes (+Foo / MY.Foo) beyond what afhub writes: none at all
    assert not [k for k in keys if k.startswith(("my.", "+"))]


async def test_htcondor_custom_image_submit_description():
    import htcondor2

    sp = _spawner("CondorProfileSpawner", "htcondor")
    ref = "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/cmssw/el9:x86_64"
    text = await _script(sp, {"profile": "cpu", "image--unlisted-choice": ref})
    keys = {k.lower(): v for k, v in dict(htcondor2.Submit(text)).items()}
    assert (
        f"--bind /usatlas/u --bind /atlasgpfs01/usatlas/data {ref} batchspawner-singleuser"
        in keys["arguments"]
    )


@pytest.mark.parametrize("options", _profile_options("slurm"), ids=str)
async def test_slurm_example_scripts(options):
    """Every profile/choice of the Slurm example -> #SBATCH lines with the profile's requests."""
    sp = _spawner("SlurmProfileSpawner", "slurm")
    text = await _script(sp, options)
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    r = sp.afhub_state.resolved.resources
    assert f"#SBATCH --cpus-per-task={int(r.cpu)}" in sbatch
    assert f"#SBATCH --mem={int(r.memory.removesuffix('Gi')) * 1024}M" in sbatch
    partition = "ampere" if r.gpu_count else "milano"
    assert f"#SBATCH --partition={partition}" in sbatch
    assert (f"#SBATCH --gres=gpu:a100:{r.gpu_count}" in sbatch) == bool(r.gpu_count)
    assert (
        "#SBATCH --time=" + ("2-00:00:00" if options.get("runtime") == "2d" else "12:00:00")
        in sbatch
    )
    assert ("#SBATCH --qos=long" in sbatch) == (options.get("runtime") == "2d")
    assert [line for line in sbatch if line.startswith("#SBATCH --account")] == [
        "#SBATCH --account=hep:default"
    ]
    # one command line, quoted, running the image (with --nv for GPUs)
    runs = [line for line in text.splitlines() if "batchspawner-singleuser" in line]
    assert len(runs) == 1 and runs[0].startswith("srun apptainer exec")
    assert ("--nv" in runs[0]) == bool(r.gpu_count)


async def test_user_options_never_reach_the_template():
    """batchspawner merges user_options into the template variables; afhub does not."""
    sp = _spawner("SlurmProfileSpawner", "slurm")
    sp.batch_script = "#!/bin/bash\n#SBATCH --partition={{partition}}\n{{cmd}}\n"
    sp.user_options = {"partition": "admin\n#SBATCH --qos=high", "cmd": "id"}
    text = await _script(sp, {"profile": "cpu"})
    assert text.splitlines()[:2] == ["#!/bin/bash", "#SBATCH --partition=milano"]
    assert "admin" not in text and "\nid\n" not in text


async def test_last_check_refuses_control_characters_in_any_variable():
    from afhub.spawner.batch import UnsafeSubmission

    sp = _spawner("SlurmProfileSpawner", "slurm")
    sp.afhub_apply_resolved(sp.afhub_catalogue().resolve(ALL_GROUPS, {"profile": "cpu"}))
    sp.req_reservation = "r\n#SBATCH --qos=high"  # e.g. an operator's callable gone wrong
    with pytest.raises(UnsafeSubmission):
        sp.afhub_subvars()


@pytest.mark.parametrize("name", ["slurm", "htcondor"])
def test_examples_check_clean(name, capsys):
    """The SLAC-like Slurm and BNL-like HTCondor examples: `afhub check` says ok, with no
    warning, for the standalone (`jupyterhub -f`) deployment batch sites use."""
    from afhub.hub_config import cli

    path = str(EXAMPLES / f"{name}.yaml")
    assert validate(load_file(path)) == []
    assert cli.main(["check", "--target", "standalone", path]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ok (backend {name}, ") and err == ""
    c = Config()
    apply.configure(
        c, load_file(path), data_dir="/nonexistent", environ={"AFHUB_OIDC_CLIENT_SECRET": "x"}
    )
    spawner = {"slurm": "SlurmProfileSpawner", "htcondor": "CondorProfileSpawner"}[name]
    assert c.JupyterHub.spawner_class == f"afhub-{name}"
    assert c[spawner].scheduler_timeout == 300


@pytest.mark.parametrize(
    "patch, path, message",
    [
        (
            {"batch": {"requirements": "x"}},
            "profiles[0].batch.requirements",
            "not used by the slurm backend",
        ),
        ({"batch": {"partition": "a b"}}, "profiles[0].batch.partition", "does not fit"),
        (
            {"batch": {"account": "{value}"}},
            "profiles[0].batch.account",
            "only replaced in an unlisted_choice",
        ),
    ],
)
def test_check_batch_settings(patch, path, message):
    values = {
        "backend": {"type": "slurm"},
        "profiles": [{"display_name": "P", **copy.deepcopy(patch)}],
    }
    problems = validate(values)
    assert [p.path for p in problems] == [path] and message in problems[0].message
