"""The ``slurm`` and ``htcondor`` backends: batchspawner with afhub profiles.

Glue only. A resolved profile is translated by :mod:`.translations.slurm` /
:mod:`.translations.htcondor` (pure) into batchspawner ``req_*`` values and a server command;
this module sets them and changes batchspawner where it is unsafe or leaky:

- ``user_options`` never reach the script template (batchspawner merges them into the template
  variables); only the checked ``req_*`` values and the shell-quoted command do, and every
  variable is checked once more right before submission;
- nothing logs the job environment (it holds the server's hub API token);
- a start that fails, times out or is cancelled cancels its job; the job id is stored in the
  database as soon as the job is submitted, so a hub restart in the middle finds it: a job whose
  server never came up is cancelled at the restart, a running one is kept;
- while the job waits in the queue, the scheduler's reason (Resources, Priority, QOS limits...)
  is a progress message;
- jobs run as the user's system account (``exec_prefix``, ``sudo -E -u {username}``).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shlex

from batchspawner import CondorSpawner, SlurmSpawner
from batchspawner.batchspawner import JobStatus, format_template
from tornado import web
from traitlets import Bool, Dict, Float, List, Unicode, default
from traitlets.config import LoggingConfigurable

from .capacity import POOL, CapacityCache, describe, query_condor, query_slurm
from .form import note_html
from .mixin import ProfileSpawnerMixin
from .profiles import Resolved
from .queue import pending_message
from .translations.apptainer import DEFAULT_BINDS, ApptainerSettings
from .translations.batchfields import BatchRequest
from .translations.htcondor import CONDOR_ARCH, CondorSettings, condor_request
from .translations.slurm import SlurmSettings, slurm_request

# Template variables afhub fills with multi-line text on purpose: the HTCondor submit lines it
# builds itself (``options``) and the prologue/epilogue of the operator's configuration.
_MULTILINE_OK = {"options", "prologue", "epilogue"}
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def scheduler_error(what: str, e: BaseException) -> web.HTTPError:
    """A clear spawn error (JupyterHub logs HTTPErrors as one line and shows the message)."""
    detail = (str(e).strip().splitlines() or [""])[-1][:300]
    message = f"{what}: {detail}" if detail else what
    err = web.HTTPError(503, "%s", message)
    err.jupyterhub_message = message
    return err


_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def _no_account(detail: str) -> web.HTTPError:
    message = (
        f"Your server cannot be submitted: {detail}. Batch jobs run as your own account; "
        "please ask the facility admins."
    )
    err = web.HTTPError(503, "%s", message)
    err.jupyterhub_message = message
    return err


class UnsafeSubmission(RuntimeError):
    """A template variable that would change the batch script's lines."""


def check_subvars(subvars: dict, multiline_ok: set[str] = _MULTILINE_OK) -> None:
    """Refuse control characters (newlines above all) in any template variable."""
    for key, value in subvars.items():
        if key in multiline_ok or not isinstance(value, str):
            continue
        if _UNSAFE.search(value):
            raise UnsafeSubmission(f"template variable {key!r} holds a control character")


class BatchMixin(LoggingConfigurable):
    """What the Slurm and HTCondor spawners share (placed after ProfileSpawnerMixin)."""

    account_prefix = Unicode(
        "",
        config=True,
        help="""Prefix of the system account a hub user's jobs run as (``<prefix><hub name>``).
        Default ``""``: the hub user name is the account name.""",
    )
    environment_prefix = Unicode(
        "",
        config=True,
        help="""Python environment prefix holding jupyterhub-singleuser and
        batchspawner-singleuser, for profiles without an image. Default ``""``: the commands
        are looked up on the job's PATH.""",
    )
    apptainer_command = Unicode(
        "apptainer", config=True, help="Apptainer executable. Default ``apptainer``."
    )
    apptainer_binds = List(
        Unicode(),
        default_value=list(DEFAULT_BINDS),
        config=True,
        help="Bind mounts for ``apptainer exec --bind``. Default ``['/cvmfs']``.",
    )
    apptainer_extra_args = List(
        Unicode(), config=True, help="Extra ``apptainer exec`` arguments. Default ``[]``."
    )
    gpu_types = Dict(
        config=True,
        help="GPU type names of profiles -> scheduler names (Slurm GRES type, HTCondor device name). Default ``{}``.",
    )
    server_ip = Unicode(
        "0.0.0.0",
        config=True,
        help="Address the server listens on inside the job. Default ``0.0.0.0`` (the hub connects over the network).",
    )
    node_addresses = Dict(
        config=True,
        help="Execution host names -> addresses the hub connects to. Default ``{}`` (host names as reported).",
    )

    capacity_enabled = Bool(
        True, config=True, help="Show idle capacity next to profiles. Default ``True``."
    )
    capacity_refresh_interval = Float(
        30, config=True, help="Seconds between background capacity reads. Default ``30``."
    )
    capacity_stale_after = Float(
        120,
        config=True,
        help="Seconds after which capacity is shown as out of date. Default ``120``.",
    )
    capacity_timeout = Float(
        10, config=True, help="Seconds one capacity query may take. Default ``10``."
    )

    afhub_runs_images = True  # Apptainer: a kubespawner_override image becomes the job's image
    _afhub_job_ready = False  # the server of the current job came up (kept in the state)
    _afhub_job_submitted = ""  # the job this start submitted

    # ---- the user's system account -------------------------------------------------

    def afhub_account(self) -> str:
        """The system account jobs run as: ``account_prefix`` + the hub user name."""
        name = self.account_prefix + self.user.name
        if not _ACCOUNT.fullmatch(name):
            raise _no_account(f"{name!r} cannot be a system account name")
        return name

    def afhub_check_account(self) -> None:
        """The account exists on the hub host (the site manages accounts; the hub never creates
        them for batch jobs, which need the same account on every node)."""
        name = self.afhub_account()
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise _no_account(f"there is no system account {name!r} on the hub host") from None

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

    # ---- translation ------------------------------------------------------------------

    def afhub_apptainer(self) -> ApptainerSettings:
        return ApptainerSettings(
            command=self.apptainer_command,
            binds=tuple(self.apptainer_binds),
            extra_args=tuple(self.apptainer_extra_args),
        )

    def afhub_apply_request(self, request: BatchRequest) -> None:
        for name, value in request.req.items():
            self.afhub_set("req_" + name, value)
        self.afhub_set("cmd", list(request.cmd))
        self.afhub_set_env(dict(request.env))

    def get_env(self):
        env = super().get_env()
        # batch commands run with this environment (sudo -E): they must find the cluster
        for name in self.afhub_scheduler_env:
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def cmd_formatted_for_batch(self):
        """The server command line, each argument shell-quoted (``cmd`` holds the wrapper)."""
        return " ".join(shlex.quote(a) for a in [*self.cmd, *self.get_args()])

    # ---- submission -------------------------------------------------------------------

    def afhub_subvars(self) -> dict:
        """Template variables: the ``req_*`` values only (never ``user_options``)."""
        subvars = self.get_req_subvars()
        check_subvars(subvars)
        return subvars

    async def submit_batch_script(self):
        self.ip = self.server_ip
        subvars = self.afhub_subvars()
        cmd = " ".join(
            (
                format_template(self.exec_prefix, **subvars),
                format_template(self.batch_submit_cmd, **subvars),
            )
        )
        subvars["cmd"] = self.cmd_formatted_for_batch()
        script = await self._get_batch_script(**subvars)
        self.log.info("Submitting the server job of %s: %s", self._log_name, cmd)
        try:
            out = await self.run_command(cmd, input=script, env=self.get_env())
        except RuntimeError as e:
            raise scheduler_error(f"{self.afhub_scheduler} did not accept the job", e) from None
        try:
            self.job_id = self.parse_job_id(out)
        except Exception as e:
            raise scheduler_error(
                f"{self.afhub_scheduler} answered the submission with no job id", e
            ) from None
        self.log.info("Server job of %s: %s", self._log_name, self.job_id)
        # batchspawner forgets job_id when a status query fails during the start; this copy is
        # what a failed, timed-out or cancelled start cancels
        self._afhub_job_submitted = self.job_id
        self._afhub_save_state()
        return self.job_id

    def _afhub_save_state(self) -> None:
        """Record the job id now, so that a hub restart during the start still knows the job."""
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None and self.db is not None:
            orm_spawner.state = self.get_state()
            self.db.commit()

    # ---- start / stop / poll ----------------------------------------------------------

    async def afhub_before_start(self, resolved) -> None:
        """The backend protocol's check before the base spawner starts: the account exists."""
        self.afhub_check_account()

    async def start(self):
        """batchspawner's start (the mixin's start wraps this): a start that fails, times out
        or is cancelled cancels its job; the node name becomes the address the hub uses."""
        self._afhub_job_ready = False
        try:
            ip, port = await super().start()
        except BaseException as e:
            # failed, timed out (JupyterHub cancels us) or cancelled from the progress page
            await asyncio.shield(self._afhub_cancel_quietly())
            if isinstance(e, RuntimeError):  # batchspawner: job vanished, no host, ...
                raise scheduler_error(f"The {self.afhub_scheduler} job did not start", e) from None
            raise
        self.ip = self.node_addresses.get(ip, ip)
        self._afhub_job_ready = True
        return self.ip, port

    async def _afhub_cancel_quietly(self) -> None:
        job = self.job_id or self._afhub_job_submitted
        if not job:
            return
        self.job_id = job
        try:
            await self.cancel_batch_job()
        except Exception as e:  # the job may be gone already
            self.log.warning("Cancelling job %s of %s: %s", job, self._log_name, e)
        self._afhub_job_submitted = ""

    async def run_command(self, cmd, input=None, env=None):
        # batchspawner's run_command swallows the cancellation of a start (bare except): give
        # it back, so a cancelled start stops instead of polling on
        try:
            return await super().run_command(cmd, input=input, env=env)
        finally:
            task = asyncio.current_task()
            if task is not None and getattr(task, "cancelling", lambda: 0)():
                raise asyncio.CancelledError()  # noqa: B012

    async def stop(self, now=False):
        if not self.job_id and self._afhub_job_submitted:
            self.job_id = self._afhub_job_submitted
        await super().stop(now=now)
        self._afhub_job_submitted = ""

    async def poll(self):
        status = await self.query_job_status()
        if status in (JobStatus.PENDING, JobStatus.RUNNING) and not self._afhub_job_ready:
            if not getattr(self, "_spawn_pending", False):
                # a job from a start that never completed (the hub restarted meanwhile)
                self.log.warning(
                    "Cancelling job %s of %s: its server never came up", self.job_id, self._log_name
                )
                await self._afhub_cancel_quietly()
                self.clear_state()
                return 1
            return None
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return None
        self.clear_state()
        return 1

    # ---- progress ---------------------------------------------------------------------

    async def progress(self):
        """Queue state as it changes: the scheduler's pending reason, then the node."""
        last = None
        while True:
            if self.job_id and self.state_ispending():
                message = pending_message(self.afhub_scheduler, self.job_status)
            elif self.job_id and self.state_isrunning():
                message = "Job running; waiting for the server to answer"
            elif not self.job_id:
                message = f"Submitting the job to {self.afhub_scheduler}"
            else:
                message = None
            if message and message != last:
                yield {"progress": 50 if "running" in message else 30, "message": message}
                last = message
            if self.job_id and self.state_isrunning():
                return
            await asyncio.sleep(1)

    # ---- capacity on the spawn page -------------------------------------------------

    def afhub_capacity_cache(self) -> CapacityCache:  # pragma: no cover - per backend
        raise NotImplementedError

    def afhub_shared_cache(self, key: tuple, query) -> CapacityCache:
        """The hub process's one cache for ``key`` (a scheduler), made on first use."""
        if key not in _CACHES:
            _CACHES[key] = CapacityCache(
                query,
                interval=self.capacity_refresh_interval,
                stale_after=self.capacity_stale_after,
                timeout=self.capacity_timeout,
                label=self.afhub_scheduler,
            )
        return _CACHES[key]

    def afhub_capacity_key(self, view) -> str | None:
        """The partition (or pool) a profile's jobs go to, as the capacity figures name it."""
        raise NotImplementedError  # pragma: no cover - per backend

    def afhub_profile_notes(self, views) -> dict:
        if not self.capacity_enabled or not views:
            return {}
        snap = self.afhub_capacity_cache().snapshot()
        if snap.capacity is None:
            text = (
                f"Idle capacity: {self.afhub_scheduler} is not answering"
                if snap.error
                else "Idle capacity: being read from the scheduler"
            )
            line = note_html(text, stale=True)
            return {v.slug: line for v in views}
        stale = f" (as of {_ago(snap.age)}; may be out of date)" if snap.stale else ""
        # the lines change only when the figures do: computed once per figures and page
        memo_key = (
            id(self.afhub_capacity_cache()),
            snap.read_at,
            stale,
            tuple(id(v) for v in views),
        )
        notes = _NOTES.get(memo_key)
        if notes is None:
            notes = {}
            for v in views:
                key = self.afhub_capacity_key(v) or snap.capacity.default_partition
                part = snap.capacity.partitions.get(key or "")
                if part is None:
                    continue
                gpu = (v.resources or {}).get("gpu") or {}
                text = f"Now in {key}: " + describe(
                    part, gpu_count=gpu.get("count", 0), gpu_type=gpu.get("type")
                )
                notes[v.slug] = note_html(text + stale, stale=snap.stale)
            if len(_NOTES) > 64:
                _NOTES.clear()
            _NOTES[memo_key] = notes
        return notes

    # ---- state ------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.job_id and self._afhub_job_ready:
            state["afhub_job_ready"] = True
        return state

    def load_state(self, state):
        super().load_state(state)
        self._afhub_job_ready = bool((state or {}).get("afhub_job_ready"))

    def clear_state(self):
        super().clear_state()
        self._afhub_job_ready = False


# batchspawner's SlurmSpawner script has no account or QOS line; afhub's adds them
SLURM_SCRIPT = """#!/bin/bash
#SBATCH --output={{homedir}}/jupyterhub_slurmspawner_%j.log
#SBATCH --job-name=spawner-jupyterhub
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --get-user-env=L
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}{% if account %}#SBATCH --account={{account}}
{% endif %}{% if qos %}#SBATCH --qos={{qos}}
{% endif %}{% if runtime %}#SBATCH --time={{runtime}}
{% endif %}{% if memory %}#SBATCH --mem={{memory}}
{% endif %}{% if gres %}#SBATCH --gres={{gres}}
{% endif %}{% if nprocs %}#SBATCH --cpus-per-task={{nprocs}}
{% endif %}{% if reservation %}#SBATCH --reservation={{reservation}}
{% endif %}{% if options %}#SBATCH {{options}}
{% endif %}
set -euo pipefail

trap 'echo SIGTERM received' TERM
{{prologue}}
{% if srun %}{{srun}} {% endif %}{{cmd}}
echo "jupyterhub-singleuser ended gracefully"
{{epilogue}}
"""


class SlurmProfileSpawner(ProfileSpawnerMixin, BatchMixin, SlurmSpawner):
    """batchspawner ``SlurmSpawner`` whose jobs follow the profile a user resolved."""

    afhub_scheduler = "Slurm"
    afhub_scheduler_env = ("SLURM_CONF",)

    # squeue: state, reason (for the progress page), then the host (batchspawner's host regex
    # takes the last word)
    batch_query_cmd = Unicode(
        "squeue -h -j {job_id} -o '%T %r %B'",
        config=True,
        help="Job status query. Default ``squeue -h -j {job_id} -o '%T %r %B'``.",
    )

    batch_script = Unicode(
        SLURM_SCRIPT,
        config=True,
        help="""Job script template (Jinja2) with batchspawner's variables. Default: afhub's,
        which is batchspawner's SlurmSpawner script plus ``--account`` and ``--qos``.""",
    )

    arch_features = Dict(
        config=True,
        help="Architecture -> node feature for ``--constraint``. Default ``{}`` (not constrained).",
    )

    def afhub_translate(self, resolved: Resolved) -> BatchRequest:
        settings = SlurmSettings(
            partition=self.afhub_base("req_partition"),
            account=self.afhub_base("req_account"),
            qos=self.afhub_base("req_qos"),
            runtime=self.afhub_base("req_runtime") or "08:00:00",
            gpu_types=dict(self.gpu_types),
            arch_features=dict(self.arch_features),
            environment=self.environment_prefix or None,
            apptainer=self.afhub_apptainer(),
        )
        return slurm_request(resolved, settings=settings)

    def afhub_apply_backend(self, config: BatchRequest) -> None:
        self.afhub_apply_request(config)

    # ProfileSpawnerMixin comes first in the MRO (its start/progress/state wrap ours); its
    # no-op hooks are replaced explicitly
    afhub_profile_notes = BatchMixin.afhub_profile_notes
    afhub_before_start = BatchMixin.afhub_before_start

    def afhub_capacity_cache(self) -> CapacityCache:
        timeout = self.capacity_timeout
        key = ("slurm", os.environ.get("SLURM_CONF", ""))
        return self.afhub_shared_cache(key, lambda: query_slurm(timeout))

    def afhub_capacity_key(self, view) -> str | None:
        partition = (view.batch or {}).get("partition") or self.afhub_base("req_partition")
        return partition.split(",")[0] if partition else None


class CondorProfileSpawner(ProfileSpawnerMixin, BatchMixin, CondorSpawner):
    """batchspawner ``CondorSpawner`` whose jobs follow the profile a user resolved."""

    afhub_scheduler = "HTCondor"
    afhub_scheduler_env = ("CONDOR_CONFIG",)

    requirements = Unicode(
        "", config=True, help="ClassAd requirements added to every job. Default none."
    )
    accounting_group = Unicode("", config=True, help="Accounting group. Default none.")
    default_cpu = Unicode("1", config=True, help="CPUs when a profile gives none. Default ``1``.")
    default_memory = Unicode(
        "2Gi", config=True, help="Memory when a profile gives none. Default ``2Gi``."
    )
    capacity_pool = Unicode(
        "", config=True, help="Collector queried for capacity. Default: the local configuration's."
    )

    def afhub_translate(self, resolved: Resolved) -> BatchRequest:
        settings = CondorSettings(
            requirements=self.requirements,
            accounting_group=self.accounting_group,
            runtime=self.afhub_base("req_runtime") or "08:00:00",
            cpu=int(self.default_cpu),
            memory=self.default_memory,
            gpu_types=dict(self.gpu_types),
            environment=self.environment_prefix or None,
            apptainer=self.afhub_apptainer(),
        )
        return condor_request(resolved, username=self.afhub_account(), settings=settings)

    def afhub_apply_backend(self, config: BatchRequest) -> None:
        self.afhub_apply_request(config)

    # ProfileSpawnerMixin comes first in the MRO (its start/progress/state wrap ours); its
    # no-op hooks are replaced explicitly
    afhub_profile_notes = BatchMixin.afhub_profile_notes
    afhub_before_start = BatchMixin.afhub_before_start

    def cmd_formatted_for_batch(self):
        # batchspawner's Condor template wraps the command in Arguments = "-c 'exec {cmd}'"
        return BatchMixin.cmd_formatted_for_batch(self).replace('"', '""').replace("'", "''")

    def afhub_capacity_cache(self) -> CapacityCache:
        pool, timeout = self.capacity_pool or None, self.capacity_timeout
        key = ("htcondor", self.capacity_pool)
        return self.afhub_shared_cache(key, lambda: query_condor(pool, timeout))

    def afhub_capacity_key(self, view) -> str | None:
        arch = (view.resources or {}).get("arch")
        if not arch and view.image is not None and len(view.image.archs) == 1:
            arch = view.image.archs[0]
        return f"{POOL}/{CONDOR_ARCH[arch]}" if arch else POOL


# one capacity cache per scheduler in the hub process, shared by every user's spawner
_CACHES: dict[tuple, CapacityCache] = {}
# capacity lines per (cache, time of its read, staleness text, visible profiles)
_NOTES: dict[tuple, dict] = {}


def _ago(age: float | None) -> str:
    if age is None:
        return "never"
    if age < 120:
        return f"{int(age)} s ago"
    return f"{int(age // 60)} min ago"
