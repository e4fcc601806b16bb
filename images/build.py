"""Build afhub's images on this machine, with no registry: ``make images`` and tests/test_images.py.

One definition of how an image is built, used by both:

- the container engine: podman (Debian), configured for a machine without systemd, with hybrid
  cgroups and no CAP_SYS_RESOURCE (``containers.conf``) and storing its images under the
  checkout (``storage.conf``: native overlay in ``.afhub/containers``); docker where its daemon
  answers and podman is missing;
- the base: ``localhost/afhub-base:bookworm``, made with mmdebstrap from this machine's Debian
  sources when it is missing (no registry is needed for ``FROM``); on a machine with a registry
  the Dockerfiles' default, the official ``python`` image, works unchanged;
- the afhub wheel (built by the hub environment, so the image build needs no Node);
- the build itself, with the host's CA bundle mounted (pip may reach its index through a
  TLS-intercepting proxy) and labels naming the afhub version, the lock's sha256 and the hash of
  every input: an image whose ``org.afhub.inputs`` label matches is reused, not rebuilt.

Standard library only. Run ``python images/build.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("AFHUB_CONTAINERS", ROOT / ".afhub" / "containers"))
BASE_IMAGE = "localhost/afhub-base:bookworm"
# what the local base holds: the analysis image needs a Python with venv, the CA store, useradd
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
WHEELS = ROOT / ".afhub" / "wheels"  # the build context's afhub wheel (see .dockerignore)
LABEL = "org.afhub"

CONTAINERS_CONF = """\
# Written by images/build.py: podman on a machine without systemd (events in a file, cgroupfs),
# with hybrid cgroups (runc; crun refuses them) and no CAP_SYS_RESOURCE (fixed ulimits).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE_CONF = """\
# Written by images/build.py: images and containers of this checkout, native overlay.
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


@dataclass(frozen=True)
class Target:
    """One image: its Dockerfile, build target (stage), the locks it installs (build argument
    that must name the lock's sha256 -> lock file)."""

    name: str
    dockerfile: str
    stage: str | None
    locks: dict[str, str]
    extra_inputs: tuple[str, ...] = ()

    @property
    def repository(self) -> str:
        return f"localhost/afhub/{self.name}"


TARGETS = {
    "analysis": Target(
        "analysis",
        "images/analysis/Dockerfile",
        "analysis",
        {"LOCK_SHA256": "images/analysis/requirements.txt"},
        ("images/analysis/data",),
    ),
    "analysis-gpu": Target(
        "analysis-gpu",
        "images/analysis/Dockerfile",
        "analysis-gpu",
        {
            "LOCK_SHA256": "images/analysis/requirements.txt",
            "GPU_LOCK_SHA256": "images/analysis/requirements-gpu.txt",
        },
        ("images/analysis/data",),
    ),
    "hub": Target("hub", "images/hub/Dockerfile", None, {"LOCK_SHA256": "images/hub/requirements.txt"}),
}

# afhub's own sources: a change to any of them changes the wheel, hence the images
AFHUB_INPUTS = (
    "pyproject.toml",
    "hub_config",
    "spawner",
    "authenticator",
    "server_ext",
    "labextension/afhub_build.py",
    "labextension/src",
    "labextension/style",
    "labextension/schema",
    "labextension/package.json",
    "labextension/yarn.lock",
    ".dockerignore",
)


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


# -- the engine ------------------------------------------------------------------------------
def engine_env(environ: dict | None = None) -> dict:
    """The environment podman runs with: this checkout's containers.conf and storage.conf
    (written when missing), unless the caller points CONTAINERS_CONF/… elsewhere already."""
    env = dict(os.environ if environ is None else environ)
    STATE.mkdir(parents=True, exist_ok=True)
    conf, storage = STATE / "containers.conf", STATE / "storage.conf"
    for path, text in ((conf, CONTAINERS_CONF), (storage, STORAGE_CONF.format(root=STATE))):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    env.setdefault("CONTAINERS_CONF", str(conf))
    env.setdefault("CONTAINERS_STORAGE_CONF", str(storage))
    return env


def engine() -> str | None:
    """``podman`` if installed, else ``docker`` if its daemon answers, else None."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
        if ok:
            return "docker"
    return None


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("env", engine_env())
    return subprocess.run(cmd, **kw)


def inspect(ref: str, tool: str = "podman") -> dict | None:
    r = run([tool, "image", "inspect", ref], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return None
    data = json.loads(r.stdout)
    return data[0] if data else None


def labels(ref: str, tool: str = "podman") -> dict:
    info = inspect(ref, tool) or {}
    return (info.get("Config") or {}).get("Labels") or info.get("Labels") or {}


# -- the base --------------------------------------------------------------------------------
def apt_mirrors(sources_dir: str = "/etc/apt") -> list[str]:
    """``deb URI SUITE COMPONENTS`` lines of this machine's Debian sources (one-line and deb822
    formats; other vendors' repositories and ``deb-src`` are left out)."""
    lines: list[str] = []
    d = Path(sources_dir)
    files = [d / "sources.list", *sorted((d / "sources.list.d").glob("*.list"))]
    for f in files:
        if f.is_file():
            for line in f.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("deb ") and "debian" in line:
                    lines.append(re.sub(r"\[[^]]*\]\s*", "", line))
    for f in sorted((d / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                if "debian" not in uri:
                    continue
                for suite in fields.get("suites", "").split():
                    lines.append(f"deb {uri} {suite} {fields.get('components', 'main')}")
    return list(dict.fromkeys(lines))


def ensure_base(ref: str = BASE_IMAGE, tool: str = "podman") -> str:
    """``ref`` (a Debian bookworm minbase with Python), made here with mmdebstrap if missing."""
    if inspect(ref, tool):
        return ref
    if not shutil.which("mmdebstrap"):
        raise SystemExit(f"{ref} is missing and mmdebstrap is not installed (make images installs it)")
    mirrors = apt_mirrors()
    if not mirrors:
        raise SystemExit("no Debian mirror in /etc/apt/sources.list{,.d}: cannot make the base")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="afhub-base-") as tmp:
        tar = os.path.join(tmp, "base.tar")
        log(f"making {ref} with mmdebstrap from {len(mirrors)} Debian source(s)")
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "--aptopt=Acquire::Retries=3",
                "bookworm",
                tar,
                *mirrors,
            ]
        )
        run([tool, "import", "--quiet", tar, ref], stdout=subprocess.DEVNULL)
    log(f"{ref} made in {time.monotonic() - t0:.0f} s")
    return ref


# -- the wheel -------------------------------------------------------------------------------
def afhub_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def build_wheel(python: str | None = None) -> Path:
    """afhub's wheel in ``.afhub/wheels`` (the only one there), built by the hub environment."""
    python = python or str(ROOT / ".venv" / "bin" / "python")
    if not os.path.exists(python):
        python = sys.executable
    WHEELS.mkdir(parents=True, exist_ok=True)
    for old in WHEELS.glob("afhub-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="afhub-wheel-") as tmp:
        # an out-of-tree build directory: `make server-env` removes ./build as it goes
        r = subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(WHEELS), str(ROOT)],
            env={**os.environ, "TMPDIR": tmp},
            capture_output=True,
            text=True,
        )
        if r.returncode:
            raise SystemExit(f"building the afhub wheel failed:\n{r.stdout}{r.stderr}")
    (wheel,) = WHEELS.glob("afhub-*.whl")
    strip_demo(wheel)
    return wheel


#: the demo provider program and its pages (the ``demo`` extra's): never in an image
DEMO_FILES = re.compile(r"^afhub/authenticator/(dev_idp\.py|dev_idp_templates/)")


def strip_demo(wheel: Path) -> None:
    """Drop :data:`DEMO_FILES` from ``wheel`` and its RECORD: the images' afhub carries no demo
    provider (its settings, ``afhub.hub_config.demo``, are plain configuration and stay)."""
    with zipfile.ZipFile(wheel) as z:
        entries = [(i, z.read(i)) for i in z.infolist() if not DEMO_FILES.match(i.filename)]
    record = next(i for i, _ in entries if i.filename.endswith(".dist-info/RECORD"))
    lines = [
        line
        for line in dict(entries)[record].decode().splitlines()
        if not DEMO_FILES.match(line.split(",", 1)[0])
    ]
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for info, body in entries:
            z.writestr(info, ("\n".join(lines) + "\n").encode() if info is record else body)
    os.replace(tmp, wheel)


# -- inputs and the build --------------------------------------------------------------------
def _files(rel: str) -> list[Path]:
    p = ROOT / rel
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(
            f
            for f in p.rglob("*")
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
        )
    return []


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_hash(target: Target, base_id: str, build_args: dict) -> str:
    """sha256 over everything that makes the image: Dockerfile, locks, data, afhub's sources,
    the base image's id and the build arguments."""
    h = hashlib.sha256()
    rels = [target.dockerfile, *target.locks.values(), *target.extra_inputs, *AFHUB_INPUTS, __file__]
    for rel in rels:
        for f in _files(str(rel)):
            h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f).encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    h.update(f"{target.stage}\0{base_id}\0{sorted(build_args.items())}".encode())
    return h.hexdigest()


@dataclass
class Built:
    ref: str
    reused: bool
    seconds: float
    size_bytes: int


def ensure_image(
    name: str,
    *,
    base: str | None = None,
    tool: str | None = None,
    force: bool = False,
) -> Built:
    """Image ``name`` of :data:`TARGETS`, built unless one with the same inputs exists.

    ``base`` is the ``BASE_IMAGE`` build argument; None makes and uses the local base.
    """
    target = TARGETS[name]
    tool = tool or engine()
    if tool is None:
        raise SystemExit("no container engine: install podman (make images does) or run docker")
    t0 = time.monotonic()
    with building():  # another build of this checkout (`make test`'s prebuild) first
        return _ensure_image(target, base, tool, force, t0)


@contextlib.contextmanager
def building():
    """One build at a time per image store: a second caller waits for the first, then finds
    the image it built (same inputs) and reuses it instead of building it again."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _ensure_image(target: Target, base: str | None, tool: str, force: bool, t0: float) -> Built:
    if base is None:
        base = ensure_base(tool=tool)
    base_info = inspect(base, tool)
    if base_info is None:
        raise SystemExit(f"base image {base} is not present (pull it or omit --base)")
    args = {"BASE_IMAGE": base, "AFHUB_VERSION": afhub_version()}
    args.update({arg: sha256_file(ROOT / lock) for arg, lock in target.locks.items()})
    if os.path.exists(HOST_CA):
        args["PIP_CERT"] = HOST_CA
    digest = inputs_hash(target, base_info["Id"], args)
    ref = f"{target.repository}:{digest[:16]}"
    if not force and labels(ref, tool).get(f"{LABEL}.inputs") == digest:
        info = inspect(ref, tool) or {}
        return Built(ref, True, time.monotonic() - t0, int(info.get("Size") or 0))
    wheel = build_wheel()
    cmd = [tool, "build", "--pull=never", "--network", "host", "-f", target.dockerfile]
    if tool == "podman":
        cmd += ["--format", "docker"]  # OCI images have no SHELL (the Dockerfiles set pipefail)
    if target.stage:
        cmd += ["--target", target.stage]
    if "PIP_CERT" in args:
        cmd += ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    assert wheel.name == f"afhub-{args['AFHUB_VERSION']}-py3-none-any.whl", wheel.name
    cmd += ["--label", f"{LABEL}.inputs={digest}", "-t", ref, "-t", f"{target.repository}:latest"]
    log(f"building {ref} ({target.dockerfile}{' --target ' + target.stage if target.stage else ''})")
    run([*cmd, str(ROOT)], cwd=ROOT)
    prune(target, keep=ref, tool=tool)
    info = inspect(ref, tool) or {}
    return Built(ref, False, time.monotonic() - t0, int(info.get("Size") or 0))


def prune(target: Target, *, keep: str, tool: str = "podman") -> None:
    """Remove this target's images from earlier inputs (their layers stay while shared)."""
    r = run(
        [tool, "images", "--format", "{{.Repository}}:{{.Tag}}", target.repository],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    keep_tags = {keep, f"{target.repository}:latest"}
    old = [ref for ref in r.stdout.split() if ref not in keep_tags and ref.startswith(target.repository + ":")]
    if old:
        run([tool, "rmi", "--force", *old], capture_output=True, check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "targets", nargs="*", metavar="IMAGE", help=f"{', '.join(TARGETS)} or all (default: analysis)"
    )
    p.add_argument("--base", help=f"BASE_IMAGE (default: {BASE_IMAGE}, made here if missing)")
    p.add_argument("--force", action="store_true", help="build even when an image matches")
    p.add_argument("--env", action="store_true", help="print the podman environment and exit")
    a = p.parse_args(argv)
    if a.env:
        env = engine_env({})
        for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"):
            print(f"export {k}={env[k]}")
        return 0
    names = list(TARGETS) if "all" in a.targets else (a.targets or ["analysis"])
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown image {unknown[0]!r}; images: {', '.join(TARGETS)}, all")
    for name in names:
        b = ensure_image(name, base=a.base, force=a.force)
        what = "reused" if b.reused else f"built in {b.seconds:.0f} s"
        print(f"{b.ref}: {what}, {b.size_bytes / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
