"""The ``local`` backend: user servers as processes on this machine.

Each image of the catalogue stands for a Python environment prefix here; the server runs
``<prefix>/bin/jupyterhub-singleuser``. Isolation between users (``backend.local.accounts``):

- ``system`` (``auto`` when the hub runs as root): each hub user gets a system account
  (:mod:`.accounts`, like The Littlest JupyterHub) and the server runs as it: setuid/setgid in
  the child before exec (JupyterHub's ``LocalProcessSpawner`` machinery), no ``--allow-root``.
  Homes are 0700, the hub's data dir 0700 root, so one user reaches neither another's files nor
  the hub's secrets.
- ``single-user`` (``auto`` without root): every server would run as the hub's own account, so
  the backend serves one hub user (the first to start a server, recorded in
  ``<home_root>/.afhub-single-user``) and refuses everyone else with a clear message.
- ``shared-uid``: the operator's explicit, UNSAFE opt-in to several users on one account.

CPU, memory and GPU settings of a profile are *described* to the server (``AFHUB_*``,
``CPU_LIMIT``, ``MEM_LIMIT``), not enforced, and no GPU is attached.
"""

from __future__ import annotations

import errno
import os
import platform
import sys

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import Bool, Unicode, default, validate

from . import accounts
from .home_seed import seed_home
from .mixin import ProfileSpawnerMixin, install_prefill_log_filter, user_error
from .profiles import Resolved
from .translations.local import LocalConfig, local_config

SERVER_ENV_VAR = "AFHUB_SERVER_ENV"
SERVER_ENV_DEFAULT = "/opt/afhub/envs/analysis"
OWNER_FILE = accounts.OWNER_FILE
SYSTEM_HOME_ROOT = "/home/afhub"
TERMINAL_SHELL = "/bin/bash"


def server_environment(environ=None) -> str:
    """The prefix user servers run in when the values file names none (see ``default_prefix``)."""
    environ = os.environ if environ is None else environ
    if environ.get(SERVER_ENV_VAR):
        return environ[SERVER_ENV_VAR]
    if os.path.exists(os.path.join(SERVER_ENV_DEFAULT, "bin", "jupyterhub-singleuser")):
        return SERVER_ENV_DEFAULT
    return sys.prefix


def refuse(message: str, status: int = 403) -> web.HTTPError:
    """An HTTP error whose message the spawn page and REST clients show as it is: a refusal
    (4xx, logged once by the spawner) or a failure the admins must fix (5xx, logged)."""
    if status < 500:
        return user_error(status, message)
    err = web.HTTPError(status, "%s", message)
    err.jupyterhub_message = message
    return err


class LocalProfileSpawner(ProfileSpawnerMixin, LocalProcessSpawner):
    """Run servers as local processes, one Python environment prefix per image."""

    home_root = Unicode(
        "",
        config=True,
        help=(
            "Directory holding one home per user, ``<home_root>/<hub username>``. Default: "
            f"``{SYSTEM_HOME_ROOT}`` with per-user accounts, else ``<cwd>/home``."
        ),
    )

    default_prefix = Unicode(
        config=True,
        help=(
            "Python environment prefix for images without ``local_prefix``. Default: the afhub "
            "server environment (``$AFHUB_SERVER_ENV``, else ``/opt/afhub/envs/analysis`` when "
            "it exists, as ``make server-env`` builds it), else afhub's own ``sys.prefix``."
        ),
    )

    accounts = Unicode(
        "auto",
        config=True,
        help=(
            "How servers are isolated: ``auto`` (``system`` as root, else ``single-user``), "
            "``system`` (one system account per hub user; needs root), ``single-user`` (one hub "
            "user only, as the hub's account), ``shared-uid`` (UNSAFE: every user as the hub's "
            "account). Default ``auto``."
        ),
    )

    account_prefix = Unicode(
        "afhub-",
        config=True,
        help="Prefix of the system account names (``<prefix><hub username>``). Default ``afhub-``.",
    )

    delete_accounts = Bool(
        False,
        config=True,
        help=(
            "Delete a user's system account and home when the hub user is deleted. Default "
            "``False`` (kept, so a returning user finds their files)."
        ),
    )

    sample_notebooks = Bool(
        True,
        config=True,
        help="""Place the sample notebooks (``afhub/spawner/samples``: an uproot/awkward/hist
        analysis of a small HZZ file from scikit-hep-testdata) in a user's home at their first
        start, owned by the home's owner. Once per home: a deleted sample is not brought back.
        Default True.""",
    )

    @validate("accounts")
    def _validate_accounts(self, proposal):
        if proposal.value not in accounts.MODES:
            raise ValueError(f"accounts must be one of {', '.join(accounts.MODES)}")
        return proposal.value

    @default("default_prefix")
    def _default_prefix_default(self):
        return server_environment()

    # batchspawner-style pitfall: keep servers on loopback unless told otherwise.
    @default("ip")
    def _ip_default(self):
        return "127.0.0.1"

    _afhub_account: str | None = None
    _afhub_home: str | None = None

    # ---- who the server runs as ---------------------------------------------------------

    def isolation_mode(self) -> str:
        return accounts.resolve_mode(self.accounts, euid=os.geteuid())

    def effective_home_root(self) -> str:
        if self.home_root:
            return self.home_root
        if self.isolation_mode() == "system":
            return SYSTEM_HOME_ROOT
        return os.path.join(os.getcwd(), "home")

    @property
    def home_dir(self) -> str:
        """The user's home (the account's ``pw_dir`` once it exists)."""
        return self._afhub_home or accounts.home_path(self.effective_home_root(), self.user.name)

    def account_name(self) -> str:
        """The user's system account (:func:`.accounts.account_for`: ``<prefix><hub name>``, or
        the hashed form; an account an earlier release made under the old hashed form stays)."""
        return accounts.account_for(self.account_prefix, self.user.name, records=True)

    def _single_user_refusal(self) -> str | None:
        if self.isolation_mode() != "single-user":
            return None
        return accounts.single_user_refusal(owner=self._owner(), user=self.user.name)

    def _owner_file(self) -> str:
        return os.path.join(self.effective_home_root(), OWNER_FILE)

    def _owner(self) -> str | None:
        return accounts.single_user_owner(self.effective_home_root())

    def _claim_owner(self) -> None:
        """Record the one user of single-user mode; O_EXCL so two first starts cannot both win."""
        os.makedirs(self.effective_home_root(), mode=0o700, exist_ok=True)
        try:
            fd = os.open(self._owner_file(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.user.name + "\n")

    # ---- profile translation ---------------------------------------------------------

    def afhub_translate(self, resolved: Resolved) -> LocalConfig:
        return local_config(
            resolved, default_prefix=self.environment_prefix(), machine_arch=platform.machine()
        )

    def environment_prefix(self) -> str:
        return self.default_prefix or server_environment()

    def afhub_apply_backend(self, config: LocalConfig) -> None:
        self.afhub_set("cmd", list(config.cmd))
        self.afhub_set("cpu_limit", config.cpu_limit)
        self.afhub_set("mem_limit", config.mem_limit)
        self.afhub_set_env(config.env)

    def afhub_page_notices(self) -> list[str]:
        if self.isolation_mode() != "shared-uid":
            return []
        return [
            "Warning: this hub runs every user's server as the same system account "
            "(backend.local.accounts: shared-uid). Other users of this hub can read your files, "
            "your tokens and your running server. Do not keep anything private here."
        ]

    async def afhub_apply_user_options(self, user_options):
        message = self._single_user_refusal()
        if message:
            install_prefill_log_filter(self.log)
            self.log.warning("Refused start of %s: single-user mode", self._log_name)
            raise refuse(message)
        return await super().afhub_apply_user_options(user_options)

    # ---- start -----------------------------------------------------------------------

    async def afhub_before_start(self, resolved: Resolved) -> None:
        """Who the server runs as: the user's account (created now if needed) or, without
        accounts, the hub's own account for the one user single-user mode serves."""
        mode = self.isolation_mode()
        executable = self.cmd[0] if self.cmd else ""
        label = resolved.display_name
        if mode == "system":
            if os.geteuid() != 0:
                raise refuse(
                    "backend.local.accounts is 'system' but the hub does not run as root; "
                    "ask the facility admins.",
                    500,
                )
            self._prepare_account(executable, label)
        else:
            message = self._single_user_refusal()
            if message:
                raise refuse(message)
            if not os.access(executable, os.X_OK):
                raise refuse(self._no_server_message(executable, label), 500)
            if mode == "single-user":
                self._claim_owner()
            try:
                self._afhub_home = accounts.home_path(self.effective_home_root(), self.user.name)
            except accounts.AccountRefused as e:
                raise refuse(str(e)) from None
            os.makedirs(self._afhub_home, mode=0o700, exist_ok=True)
        if self.sample_notebooks:
            st = os.stat(self.home_dir)  # the files belong to whoever owns the home
            seed_home(self.home_dir, uid=st.st_uid, gid=st.st_gid)

    @staticmethod
    def _no_server_message(executable: str, label: str) -> str:
        return (
            f"The environment of profile {label!r} has no jupyterhub-singleuser ({executable}); "
            f"ask the facility admins."
        )

    def _prepare_account(self, executable: str, label: str) -> None:
        name = self.account_name()
        root = self.effective_home_root()
        try:
            accounts.ensure_home_root(root)
            pw = accounts.ensure_account(
                name, home=accounts.home_path(root, self.user.name), user=self.user.name
            )
        except accounts.AccountRefused as e:  # root, a system account, another user's account
            install_prefill_log_filter(self.log)
            self.log.warning("Refused start of %s as account %s: %s", self._log_name, name, e)
            raise refuse(str(e)) from None
        except (accounts.AccountError, OSError) as e:
            self.log.error("Account for %s: %s", self._log_name, e)
            raise refuse(
                "Your system account could not be prepared; ask the facility admins.", 500
            ) from None
        self._afhub_account, self._afhub_home = name, pw.pw_dir
        if not os.path.exists(executable):
            raise refuse(self._no_server_message(executable, label), 500)
        blocked = accounts.unreachable(executable, name, os.R_OK | os.X_OK)
        if blocked:
            self.log.error("%s cannot execute %s (stopped at %s)", name, executable, blocked)
            raise refuse(
                f"The environment of profile {label!r} ({os.path.dirname(os.path.dirname(executable))}) "
                f"is not readable by user accounts (at {blocked}); ask the facility admins.",
                500,
            )
        blocked = accounts.unreachable(pw.pw_dir, name, os.R_OK | os.W_OK | os.X_OK)
        if blocked:
            self.log.error("%s cannot use its home %s (at %s)", name, pw.pw_dir, blocked)
            raise refuse("Your home directory is not usable; ask the facility admins.", 500)

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0 and self.isolation_mode() != "system" and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    def make_preexec_fn(self, name):
        if self.isolation_mode() == "system":
            return set_user_setuid(self._afhub_account or self.account_name())
        home = self.home_dir

        def preexec():
            os.chdir(home)

        return preexec

    def user_env(self, env):
        env["USER"] = self._afhub_account if self.isolation_mode() == "system" else self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = TERMINAL_SHELL  # the account has no login shell; terminals need one
        prefix_bin = os.path.dirname(self.cmd[0]) if self.cmd else ""
        if prefix_bin:
            env["PATH"] = os.pathsep.join(
                p for p in [prefix_bin, env.get("PATH", "/usr/local/bin:/usr/bin:/bin")] if p
            )
        return env

    async def move_certs(self, paths):
        return paths  # internal SSL is not used by afhub's local backend

    # ---- state, deletion ----------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self._afhub_account:
            state["account"] = self._afhub_account
        if self._afhub_home:
            state["home"] = self._afhub_home
        return state

    def load_state(self, state):
        super().load_state(state)
        self._afhub_account = (state or {}).get("account") or self._afhub_account
        self._afhub_home = (state or {}).get("home") or self._afhub_home

    async def delete_forever(self):
        if not (self.delete_accounts and self.isolation_mode() == "system" and self.name == ""):
            return
        name = self.account_name()
        try:
            if accounts.delete_account(name, user=self.user.name):
                self.log.info("Deleted system account %s of %s", name, self.user.name)
        except accounts.AccountError as e:
            self.log.error("Could not delete system account %s: %s", name, e)
        except OSError as e:  # pragma: no cover - userdel missing
            if e.errno != errno.ENOENT:
                raise
