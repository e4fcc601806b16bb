"""The ``local`` backend: user servers as processes on this machine.

Each image of the catalogue stands for a Python environment prefix here; the server runs
``<prefix>/bin/jupyterhub-singleuser`` with a private working directory per user. This is the
embedded default's backend and is meant for one trusted machine, not for isolation: CPU, memory
and GPU settings of a profile are *described* to the server (``AFHUB_*``, ``CPU_LIMIT``,
``MEM_LIMIT``), not enforced, and no GPU is attached.
"""

from __future__ import annotations

import os
import platform
import sys

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Bool, Unicode, default

from .home_seed import seed_home
from .mixin import ProfileSpawnerMixin
from .profiles import Resolved
from .translations.local import LocalConfig, local_config

SERVER_ENV_VAR = "AFHUB_SERVER_ENV"
SERVER_ENV_DEFAULT = "/opt/afhub/envs/analysis"


def server_environment(environ=None) -> str:
    """The prefix user servers run in when the values file names none (see ``default_prefix``)."""
    environ = os.environ if environ is None else environ
    if environ.get(SERVER_ENV_VAR):
        return environ[SERVER_ENV_VAR]
    if os.path.exists(os.path.join(SERVER_ENV_DEFAULT, "bin", "jupyterhub-singleuser")):
        return SERVER_ENV_DEFAULT
    return sys.prefix


class LocalProfileSpawner(ProfileSpawnerMixin, SimpleLocalProcessSpawner):
    """Run servers as local processes, one Python environment prefix per image."""

    home_root = Unicode(
        "",
        config=True,
        help="Directory holding one working directory per user (default: ``<cwd>/home``).",
    )

    default_prefix = Unicode(
        config=True,
        help=(
            "Python environment prefix for images without ``local_prefix``. Default: the afhub "
            "server environment (``$AFHUB_SERVER_ENV``, else ``/opt/afhub/envs/analysis`` when "
            "it exists, as ``make server-env`` builds it), else afhub's own ``sys.prefix``."
        ),
    )

    @default("default_prefix")
    def _default_prefix_default(self):
        return server_environment()

    sample_notebooks = Bool(
        True,
        config=True,
        help="""Place the sample notebooks (``afhub/spawner/samples``: an uproot/awkward/hist
        analysis of a small HZZ file from scikit-hep-testdata) in a user's home at their first
        start, owned by the home's owner. Once per home: a deleted sample is not brought back.
        Default True.""",
    )

    # batchspawner-style pitfall: keep servers on loopback unless told otherwise.
    @default("ip")
    def _ip_default(self):
        return "127.0.0.1"

    @default("home_dir")
    def _home_dir_default(self):
        root = self.home_root or os.path.join(os.getcwd(), "home")
        return os.path.join(root, self.user.name)

    def environment_prefix(self) -> str:
        return self.default_prefix or server_environment()

    # ---- profile translation ---------------------------------------------------------

    def afhub_translate(self, resolved: Resolved) -> LocalConfig:
        return local_config(
            resolved, default_prefix=self.environment_prefix(), machine_arch=platform.machine()
        )

    def afhub_apply_backend(self, config: LocalConfig) -> None:
        self.afhub_set("cmd", list(config.cmd))
        self.afhub_set("cpu_limit", config.cpu_limit)
        self.afhub_set("mem_limit", config.mem_limit)
        self.afhub_set_env(config.env)

    async def afhub_before_start(self, resolved: Resolved) -> None:
        executable = self.cmd[0] if self.cmd else ""
        if not os.access(executable, os.X_OK):
            raise RuntimeError(
                f"The environment of profile {resolved.display_name!r} has no "
                f"jupyterhub-singleuser ({executable}); ask the facility admins."
            )
        os.makedirs(self.home_dir, mode=0o700, exist_ok=True)
        if self.sample_notebooks:
            st = os.stat(self.home_dir)  # the files belong to whoever owns the home
            seed_home(self.home_dir, uid=st.st_uid, gid=st.st_gid)

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    def make_preexec_fn(self, name):
        home = self.home_dir

        def preexec():
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec
