"""The ``local`` backend: user servers as processes on this machine.

Each image of the catalogue stands for a Python environment prefix here; the server runs
``<prefix>/bin/jupyterhub-singleuser`` with a private working directory per user. This is the
embedded default's backend and is meant for one trusted machine, not for isolation.
"""

from __future__ import annotations

import os

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default


class LocalProfileSpawner(SimpleLocalProcessSpawner):
    """Run servers as local processes, one Python environment prefix per image."""

    home_root = Unicode(
        "",
        config=True,
        help="Directory holding one working directory per user (default: ``<data dir>/home``).",
    )

    default_prefix = Unicode(
        "",
        config=True,
        help="Python environment prefix for images without ``local_prefix`` (default: afhub's own).",
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
        import sys

        return self.default_prefix or sys.prefix

    def _cmd_for_prefix(self, prefix: str) -> list[str]:
        return [os.path.join(prefix, "bin", "jupyterhub-singleuser")]

    async def start(self):
        self.cmd = self._cmd_for_prefix(self.environment_prefix())
        os.makedirs(self.home_dir, mode=0o700, exist_ok=True)
        return await super().start()

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
