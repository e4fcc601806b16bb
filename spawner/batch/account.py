"""The system account a hub user's batch jobs run as, checked before anything is submitted.

:class:`BatchAccount` comes before :class:`~afhub.spawner.mixin.ProfileSpawnerMixin` in the
batch spawners' bases, so its :meth:`~BatchAccount.afhub_before_start` is the hook the profile
mixin's start calls (the mixin's own is a no-op default). Jobs run as
:func:`afhub.spawner.accounts.system_username` (the same name the local backend and the Dask
backends use; ``exec_prefix``, ``sudo -E -u {username}``), never as a system account (root,
uids below ``UID_MIN``, the hub's own: :func:`afhub.spawner.accounts.account_refusal`): such a
start is refused with HTTP 403 before anything is written or submitted.

No scheduler commands here (:mod:`.lifecycle`), no capacity (:mod:`.capacity`).
"""

from __future__ import annotations

import pwd

from tornado import web
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from .. import accounts
from ..accounts import system_username
from ..mixin import install_prefill_log_filter, user_error


def _no_account(detail: str) -> web.HTTPError:
    message = (
        f"Your server cannot be submitted: {detail}. Batch jobs run as your own account; "
        "please ask the facility admins."
    )
    err = web.HTTPError(503, "%s", message)
    err.jupyterhub_message = message
    return err


class BatchAccount(LoggingConfigurable):
    """The account part of the Slurm and HTCondor spawners (placed before ProfileSpawnerMixin:
    its ``afhub_before_start`` is the backend hook the mixin's start calls)."""

    account_prefix = Unicode(
        "",
        config=True,
        help="""Prefix of the system account a hub user's jobs run as (``<prefix><hub name>``).
        Default ``""``: the hub user name is the account name.""",
    )

    def afhub_account(self) -> str:
        """The system account jobs run as: the one name a hub user has on every afhub backend
        (:func:`afhub.spawner.accounts.system_username`: ``account_prefix`` + the hub name,
        or a cleaned name with a hash suffix when that is not a valid account name)."""
        return system_username(self.account_prefix, self.user.name)

    def afhub_check_account(self) -> None:
        """The account exists on the hub host (the site manages accounts; the hub never creates
        them for batch jobs, which need the same account on every node) and is not a system
        account (root, below ``UID_MIN``, the hub's own) nor recorded for another hub user:
        HTTP 403 otherwise (:func:`afhub.spawner.accounts.account_refusal`)."""
        name = self.afhub_account()
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise _no_account(f"there is no system account {name!r} on the hub host") from None
        try:
            accounts.check_account(self.user.name, pw, records=False)
        except accounts.AccountRefused as e:
            install_prefill_log_filter(self.log)
            self.log.warning("Refused start of %s as account %s: %s", self._log_name, name, e)
            raise user_error(403, str(e)) from None

    @default("req_username")
    def _afhub_req_username(self):
        return self.afhub_account()

    @default("req_homedir")
    def _afhub_req_homedir(self):
        return pwd.getpwnam(self.afhub_account()).pw_dir

    def user_env(self, env):
        entry = pwd.getpwnam(self.afhub_account())
        env["USER"] = entry.pw_name
        if entry.pw_dir:
            env["HOME"] = entry.pw_dir
        if entry.pw_shell:
            env["SHELL"] = entry.pw_shell
        return env

    async def afhub_before_start(self, resolved) -> None:
        """The backend protocol's check before the base spawner starts: the account exists."""
        self.afhub_check_account()
