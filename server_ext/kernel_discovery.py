"""`EnvKernelSpecManager`: kernelspecs from conda/mamba/micromamba, pixi and venv environments.

What lives here: the traitlets configuration (roots, conda envs dirs, image prefixes, install
command), the cache in front of `env_scan.EnvScanner`, and the `KernelSpecManager` methods Jupyter
calls (`find_kernel_specs`, `get_kernel_spec`, `get_all_specs`), plus the "make runnable"
entry point used by the REST handler, and `link_kernel_spec_manager`, which the server extension
calls to select this class when the operator did not choose one.

What must not live here: scanning details (`env_scan.py`), naming/spec building (`envs.py`),
HTTP (`handlers.py`). No subprocess is started on the listing path; the only subprocess is the
optional ipykernel install that a user requests through REST (`env_install.py`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import weakref

from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager, NoSuchKernel
from traitlets import Bool, Float, List, Unicode, default

from . import contract
from . import envs as envs_mod
from .env_install import InstallJobs
from .env_scan import EnvScanner, Source

_SPEC_KEYS = (
    "argv",
    "display_name",
    "language",
    "env",
    "interrupt_mode",
    "metadata",
    "kernel_protocol_version",
)


def _spec_dict(spec: dict) -> dict:
    """What `KernelSpec(**spec).to_dict()` returns, without building the traitlets object
    (env_scan validated the types already)."""
    return {
        "argv": list(spec["argv"]),
        "env": dict(spec.get("env") or {}),
        "display_name": spec.get("display_name", ""),
        "language": spec.get("language", ""),
        "interrupt_mode": spec.get("interrupt_mode", "signal"),
        "metadata": dict(spec.get("metadata") or {}),
        "kernel_protocol_version": spec.get("kernel_protocol_version", ""),
    }


class EnvKernelSpecManager(KernelSpecManager):
    """Kernel spec manager that adds one kernel per kernelspec of each discovered environment."""

    enabled = Bool(
        help="""Add kernels from environments. When False this behaves exactly like the stock
        KernelSpecManager. Default: True, or the value of $AFHUB_KERNELS_ENABLED (0/false/no/off
        disable). Values file: `kernels.enabled`.""",
    ).tag(config=True)

    @default("enabled")
    def _enabled_default(self):
        return contract.read_bool(os.environ, contract.KERNELS_ENABLED, True)

    roots = List(
        Unicode(),
        help="""Directories whose subdirectories are environments (venvs with pyvenv.cfg, conda
        prefixes with conda-meta/) or projects (a `.venv`, or pixi `.pixi/envs/*`); the root
        itself may also be a project. One level deep; `~` expands. A root, an environment and
        a project directory must be owned by root or this account and writable by nobody else
        (or sticky); others are skipped with their reason (`env_scan.untrusted`). Default:
        ['~/envs', '~/.virtualenvs', '~/.venvs'], or $AFHUB_KERNEL_ROOTS (os.pathsep-separated).
        Values file: `kernels.roots`.""",
    ).tag(config=True)

    @default("roots")
    def _roots_default(self):
        return contract.read_list(os.environ, contract.KERNEL_ROOTS, contract.DEFAULT_KERNEL_ROOTS)

    scan_home = Bool(
        help="""Also look one level under the home directory, where people make environments:
        `~/<name>` holding pyvenv.cfg or conda-meta/, `~/<project>/.venv`,
        `~/<project>/.pixi/envs/*` and `~/.venv`. Hidden directories (other than `.venv`) are
        not entered. Default: True, or $AFHUB_KERNELS_SCAN_HOME (0/false/no/off disable).
        Values file: `kernels.scan_home`.""",
    ).tag(config=True)

    @default("scan_home")
    def _scan_home_default(self):
        return contract.read_bool(os.environ, contract.KERNELS_SCAN_HOME, True)

    conda_envs_dirs = List(
        Unicode(),
        help="""Extra conda/mamba/micromamba `envs` directories (each subdirectory with conda-meta/
        is an environment), searched in addition to the standard locations when
        `conda_defaults` is True. Default: [], or $AFHUB_CONDA_ENVS_DIRS (os.pathsep-separated).
        Values file: `kernels.conda_envs_dirs`.""",
    ).tag(config=True)

    @default("conda_envs_dirs")
    def _conda_envs_dirs_default(self):
        return contract.read_list(os.environ, contract.CONDA_ENVS_DIRS, [])

    conda_defaults = Bool(
        True,
        help="""Also search the standard conda/mamba locations: ~/.conda/envs, ~/micromamba/envs,
        ~/.mamba/envs, $MAMBA_ROOT_PREFIX (as `base`) and its envs/, $CONDA_ENVS_PATH and
        $CONDA_ENVS_DIRS entries, `envs_dirs` in ~/.condarc and ~/.mambarc, and the prefixes listed
        in ~/.conda/environments.txt. Default: True.""",
    ).tag(config=True)

    image_prefixes = List(
        Unicode(),
        help="""Directories inside the image whose subdirectories are environments, e.g.
        /opt/micromamba/envs. Default: ['/opt/conda/envs', '/opt/micromamba/envs'], or
        $AFHUB_IMAGE_PREFIXES (os.pathsep-separated). Values file: `kernels.image_prefixes`.""",
    ).tag(config=True)

    @default("image_prefixes")
    def _image_prefixes_default(self):
        return contract.read_list(
            os.environ, contract.IMAGE_PREFIXES, contract.DEFAULT_IMAGE_PREFIXES
        )

    run_activation_scripts = Bool(
        True,
        help="""Start kernels of environments that have etc/conda/activate.d/*.sh through
        `/bin/sh`, which sources those scripts and then execs the kernel (same pid). PATH,
        CONDA_PREFIX/CONDA_DEFAULT_ENV or VIRTUAL_ENV are always set. Default: True.""",
    ).tag(config=True)

    install_command = List(
        Unicode(),
        default_value=["{python}", "-m", "pip", "install", "ipykernel"],
        help="""Command run (in the background, never on the listing path) when a user asks to
        make an environment without ipykernel runnable (POST
        afhub/api/environments/<id>/kernel). `{python}` is the environment's bin/python,
        `{prefix}` its prefix. Default: ['{python}', '-m', 'pip', 'install', 'ipykernel'].
        A conda site may prefer ['micromamba', 'install', '-y', '-p', '{prefix}', 'ipykernel'].""",
    ).tag(config=True)

    install_timeout = Float(
        900.0,
        help="Seconds after which a running install is killed and reported failed. Default: 900.",
    ).tag(config=True)

    exclude_server_prefix = Bool(
        True,
        help="""Do not list the server's own environment (sys.prefix); its `python3` kernel is
        already the stock native kernel. Default: True.""",
    ).tag(config=True)

    facility_name = Unicode(
        help="""What the server's own environment (the facility's, from the image or the
        backend's server environment) is called: its Python kernel is shown as
        "Python 3 (facility: <name>)" and the sidebar lists it as the facility's environment.
        Default: the catalogue name of the session's image ($AFHUB_IMAGE_NAME), else the last
        part of the environment's prefix (sys.prefix).""",
    ).tag(config=True)

    @default("facility_name")
    def _facility_name_default(self):
        name = os.environ.get(contract.SESSION["image_name"], "").strip()
        return name or os.path.basename(os.path.normpath(sys.prefix)) or "python"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        exclude = [sys.prefix] if self.exclude_server_prefix else []
        self._scanner = EnvScanner(log=self.log, exclude=exclude)
        self._lock = threading.RLock()
        self._facts: list[envs_mod.EnvFacts] = []
        self._skipped: list[tuple[str, str]] = []
        self._kernels: dict[str, envs_mod.KernelEntry] = {}
        self._aliases: dict[str, str] = {}
        self._specs: dict[str, object] = {}  # name -> KernelSpec, built lazily from the cache
        self._models: dict | None = None  # get_all_specs() entries of env kernels
        self._scanned = False
        self._empty_resources: str | None = None
        self.installs = InstallJobs(log=self.log)

    # -- discovery -----------------------------------------------------------------------
    def sources(self) -> list[Source]:
        """Where to look, in priority order (first finder of an environment names it)."""
        out = [Source(r, "children", "root") for r in self.roots]
        if self.scan_home:
            out.append(Source("~", "children", "home"))
        conda = list(self.conda_envs_dirs)
        if self.conda_defaults:
            conda += ["~/.conda/envs", "~/micromamba/envs", "~/.mamba/envs"]
            mamba_root = os.environ.get("MAMBA_ROOT_PREFIX")
            if mamba_root:
                conda.append(os.path.join(mamba_root, "envs"))
            for var in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
                conda += [p for p in os.environ.get(var, "").split(os.pathsep) if p]
        out += [Source(d, "children", "conda") for d in dict.fromkeys(conda)]
        if self.conda_defaults:
            out += [
                Source("~/.condarc", "condarc", "conda"),
                Source("~/.mambarc", "condarc", "conda"),
                Source("~/.conda/environments.txt", "list", "conda"),
            ]
            if os.environ.get("MAMBA_ROOT_PREFIX"):
                out.append(Source(os.environ["MAMBA_ROOT_PREFIX"], "prefix", "conda", "base"))
        out += [Source(d, "children", "image") for d in self.image_prefixes]
        return out

    def refresh(self) -> None:
        """Re-validate the cache (stat calls only, unless something changed) and rebuild names."""
        if not self.enabled:
            return
        with self._lock:
            facts, skipped = self._scanner.scan(self.sources())
            self._skipped = skipped
            if self._scanner.changed or not self._scanned:
                self._facts = facts
                self._kernels, self._aliases = envs_mod.build_kernels(
                    facts, activate=self.run_activation_scripts
                )
                self._specs = {}
                self._models = None
            self._scanned = True

    def _resource_dir(self, entry: envs_mod.KernelEntry) -> str:
        if entry.resource_dir:
            return entry.resource_dir
        if self._empty_resources is None:  # built spec without ipykernel logos: serve nothing
            self._empty_resources = tempfile.mkdtemp(prefix="afhub-kernel-resources-")
            # gone with this manager, at the latest when the server exits: not one per start
            weakref.finalize(self, shutil.rmtree, self._empty_resources, ignore_errors=True)
        return self._empty_resources

    def _spec(self, name: str):
        spec = self._specs.get(name)
        if spec is None:
            entry = self._kernels[name]
            kwargs = {k: v for k, v in entry.spec.items() if k in _SPEC_KEYS}
            spec = self.kernel_spec_class(resource_dir=self._resource_dir(entry), **kwargs)
            self._specs[name] = spec
        return spec

    def _allowed(self, name: str) -> bool:
        return not self.allowed_kernelspecs or name in self.allowed_kernelspecs

    def resolve(self, name: str) -> str | None:
        """Canonical env kernel name for a name or alias, from the cache."""
        name = name.lower()
        name = self._aliases.get(name, name)
        return name if name in self._kernels and self._allowed(name) else None

    # -- KernelSpecManager API -------------------------------------------------------------
    def find_kernel_specs(self) -> dict[str, str]:
        d = super().find_kernel_specs()
        if self.enabled:
            self.refresh()
            for name, entry in self._kernels.items():
                if name not in d and self._allowed(name):
                    d[name] = self._resource_dir(entry)
        return d

    # -- the facility's environment (the server's own) ------------------------------------
    def facility_display_name(self) -> str:
        return f"Python 3 (facility: {self.facility_name})"

    def _is_facility_kernel(self, name: str, argv: list) -> bool:
        """The server environment's own ``python3`` kernel (its argv runs this environment's
        Python: a bare ``python``, which jupyter_client runs as sys.executable, or a path in
        sys.prefix); a user's own ``python3`` kernelspec elsewhere keeps its name."""
        if not self.enabled or name != NATIVE_KERNEL_NAME or not argv:
            return False
        exe = str(argv[0])
        if exe in ("python", "python3", "python{}.{}".format(*sys.version_info[:2])):
            return True
        prefix = os.path.realpath(sys.prefix)
        return os.path.realpath(exe).startswith(prefix + os.sep)

    def facility_model(self) -> dict | None:
        """The server's own environment for the sidebar (``facility`` in GET
        afhub/api/environments), or None when its kernel is not offered."""
        if not self._allowed(NATIVE_KERNEL_NAME):
            return None
        try:
            spec = super().get_kernel_spec(NATIVE_KERNEL_NAME)
        except NoSuchKernel:
            return None
        if not self._is_facility_kernel(NATIVE_KERNEL_NAME, spec.argv):
            return None
        return {
            "id": "facility",
            "name": self.facility_name,
            "prefix": sys.prefix,
            "kind": "facility",
            "source": "server",
            "location": sys.prefix,
            "python": sys.executable,
            "has_ipykernel": True,
            "runnable": True,
            "reason": None,
            "can_install_ipykernel": False,
            "install_action": None,
            "problems": [],
            "kernels": [
                {
                    "name": NATIVE_KERNEL_NAME,
                    "display_name": self.facility_display_name(),
                    "language": spec.language,
                    "built": False,
                    "aliases": [],
                }
            ],
            "install": None,
            "facility": True,
        }

    def get_kernel_spec(self, kernel_name: str):
        """Served from the cache; aliases (nb_conda_kernels names, hashed names) resolve to the
        environment's kernel. Stock kernel dirs win for names they define; the server
        environment's own ``python3`` carries the facility's name."""
        spec = self._get_kernel_spec(kernel_name)
        if kernel_name == NATIVE_KERNEL_NAME and self._is_facility_kernel(kernel_name, spec.argv):
            spec.display_name = self.facility_display_name()
        return spec

    def _get_kernel_spec(self, kernel_name: str):
        if self.enabled:
            if not self._scanned:
                self.refresh()
            with self._lock:
                name = self.resolve(kernel_name)
                if name is not None and not self._stock_has(name):
                    return self._spec(name)
        try:
            return super().get_kernel_spec(kernel_name)
        except NoSuchKernel:
            if not self.enabled:
                raise
        self.refresh()  # maybe created since the last listing
        with self._lock:
            name = self.resolve(kernel_name)
            if name is None:
                raise NoSuchKernel(kernel_name)
            return self._spec(name)

    def _stock_has(self, name: str) -> bool:
        return self._find_spec_directory(name) is not None

    def get_all_specs(self) -> dict:
        if type(self).find_kernel_specs is not EnvKernelSpecManager.find_kernel_specs:
            # a subclass chose the kernels itself: the stock listing, built from its
            # find_kernel_specs and get_kernel_spec, as jupyter_client does for any subclass
            return super().get_all_specs()
        d = super().find_kernel_specs()
        res = {}
        for kname, resource_dir in d.items():
            try:
                spec = self._get_kernel_spec_by_name(kname, resource_dir)
                res[kname] = {"resource_dir": resource_dir, "spec": spec.to_dict()}
            except NoSuchKernel:
                pass
            except Exception:
                self.log.warning("Error loading kernelspec %r", kname, exc_info=True)
        if not self.enabled:
            return res
        native = res.get(NATIVE_KERNEL_NAME)
        if native and self._is_facility_kernel(NATIVE_KERNEL_NAME, native["spec"]["argv"]):
            native["spec"]["display_name"] = self.facility_display_name()
        self.refresh()
        with self._lock:
            if self._models is None:  # plain dicts: no KernelSpec objects on the listing path
                self._models = {
                    name: (self._resource_dir(entry), _spec_dict(entry.spec))
                    for name, entry in self._kernels.items()
                }
            models = self._models
        allowed = self.allowed_kernelspecs
        for name, (resource_dir, spec) in models.items():
            if name not in res and (not allowed or name in allowed):
                res[name] = {"resource_dir": resource_dir, "spec": dict(spec)}
        return res

    # -- environments (REST) -----------------------------------------------------------------
    def environments(self) -> dict:
        """Model for GET afhub/api/environments."""
        self.refresh()
        with self._lock:
            by_env: dict[str, list] = {}
            for entry in self._kernels.values():
                if self._allowed(entry.name):
                    by_env.setdefault(entry.env_id, []).append(entry)
            out = []
            for facts in sorted(self._facts, key=lambda f: (f.name, f.prefix)):
                eid = envs_mod.env_id(facts.realpath)
                model = envs_mod.env_model(
                    facts,
                    by_env.get(eid, []),
                    self.installs.status(eid),
                    install_command=list(self.install_command),
                )
                out.append(model)
            skipped = [{"path": p, "reason": r} for p, r in self._skipped]
        return {
            "enabled": bool(self.enabled),
            "environments": out,
            "skipped": skipped,
            "facility": self.facility_model() if self.enabled else None,
        }

    def environment(self, eid: str) -> dict | None:
        for model in self.environments()["environments"]:
            if model["id"] == eid:
                return model
        return None

    def make_runnable(self, eid: str) -> tuple[int, dict]:
        """Start making an environment runnable: (HTTP status, body).

        200: already has a kernel. 202: ipykernel install started (or running); poll
        GET afhub/api/environments/<id> for `install`. 404: unknown id. 409: nothing to run
        (no bin/python)."""
        model = self.environment(eid)
        if model is None:
            return 404, {"message": f"no environment with id {eid!r}"}
        if model["runnable"]:
            return 200, model
        if not model["python"]:
            return 409, {"message": f"{model['prefix']}: {model['reason']}", "environment": model}
        argv = envs_mod.install_argv(
            list(self.install_command), python=model["python"], prefix=model["prefix"]
        )
        status = self.installs.start(eid, argv, timeout=self.install_timeout)
        model["install"] = status
        return 202, model


def link_kernel_spec_manager(serverapp) -> bool:
    """Select EnvKernelSpecManager unless the operator chose a kernel spec manager (or a gateway
    is in use). Runs at extension link time, before ServerApp creates its managers."""
    configured = serverapp.config.get("ServerApp", {}).get("kernel_spec_manager_class")
    if configured is not None:
        serverapp.log.info("afhub kernels: keeping configured kernel spec manager %s", configured)
        return False
    # Do not read serverapp.kernel_spec_manager_class here: its default needs gateway_config,
    # which ServerApp only creates after linking. Same test as that default, from config.
    from jupyter_server.gateway.gateway_client import GatewayClient

    if GatewayClient.instance(parent=serverapp).gateway_enabled:
        serverapp.log.info("afhub kernels: gateway in use, not adding environment kernels")
        return False
    serverapp.kernel_spec_manager_class = EnvKernelSpecManager
    serverapp.log.info("afhub kernels: environment kernel discovery enabled (EnvKernelSpecManager)")
    return True
