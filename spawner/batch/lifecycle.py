"""The batch job's lifecycle around batchspawner: submit, query, start, stop, poll, progress,
state (:class:`BatchMixin`, shared by the Slurm and HTCondor spawners).

:class:`BatchMixin` comes after :class:`~afhub.spawner.mixin.ProfileSpawnerMixin` in the
spawners' bases: the mixin's ``start``, ``progress`` and state methods wrap these, and these
override batchspawner's (``SlurmSpawner``/``CondorSpawner``, last in the bases) only where
batchspawner is unsafe or leaky:

- ``user_options`` never reach the script template (batchspawner merges them into the template
  variables); only the checked ``req_*`` values and the shell-quoted command do, and every
  variable is checked once more right before submission (:func:`check_subvars`);
- secrets never reach the scheduler: they go to the job in a file written as the user's
  account (:mod:`.secrets`), and every scheduler command runs with a minimal environment
  (never the hub's own, which holds its secrets); nothing logs the job environment;
- a start that fails, times out or is cancelled cancels its job; the job id is stored in the
  database as soon as the job is submitted; a cancel the scheduler cannot take is kept in the
  spawner's state and retried until the scheduler answers;
- a scheduler that does not answer for ``scheduler_timeout`` seconds during a start, or answers
  something afhub cannot read, ends the start with a clear message (:mod:`.queue` classifies
  every answer); while the job waits, the scheduler's reason is a progress message;
- a status query that errors (the scheduler down or unreachable, a query that failed without
  an error text or could not run) is "unknown", never "gone": a running server is kept, its
  job is not cancelled, and the next answer sets the state (logged once each way).

Not here: the account (:mod:`.account`), capacity on the spawn page (:mod:`.capacity`),
per-scheduler commands, parsing and the spawner classes (:mod:`.slurm`, :mod:`.htcondor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import shlex
import time

from batchspawner.batchspawner import JobStatus, format_template
from tornado import web
from traitlets import Dict, Float, List, Unicode
from traitlets.config import LoggingConfigurable

from ..translations.apptainer import DEFAULT_BINDS, ApptainerSettings
from ..translations.batchfields import DEFAULT_RUNTIME, BatchRequest
from . import secrets as jobsecrets
from .account import _no_account
from .queue import JobState

# job_status of a status query that failed without an answer to classify (see afhub_query_text)
QUERY_FAILED = "afhub: no answer: "
# job kind -> batchspawner's status (held and gone are NOTFOUND; poll tells them apart)
_STATUS = {
    "running": JobStatus.RUNNING,
    "pending": JobStatus.PENDING,
    "unknown": JobStatus.UNKNOWN,
    "unreadable": JobStatus.UNKNOWN,
}

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


class SchedulerTrouble(RuntimeError):
    """The scheduler did not answer in time, or answered something afhub cannot read."""


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
    """The job lifecycle the Slurm and HTCondor spawners share (placed after
    ProfileSpawnerMixin, before batchspawner's class)."""

    environment_prefix = Unicode(
        "",
        config=True,
        help="""Python environment prefix holding jupyterhub-singleuser and
        batchspawner-singleuser, for profiles without an image. Default ``""``: the commands
        are looked up on the job's PATH.""",
    )
    apptainer_command = Unicode(
        ApptainerSettings.command, config=True, help="Apptainer executable. Default ``apptainer``."
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
    req_runtime = Unicode(
        DEFAULT_RUNTIME,
        config=True,
        help="""Wall time of a server job, ``[D-]HH:MM:SS``, when the profile gives none.
        Default ``08:00:00`` (batchspawner's is empty: no limit asked for).""",
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
    scheduler_timeout = Float(
        120,
        config=True,
        help="""Seconds the scheduler may leave status queries unanswered during a start before
        the start is given up (its job is cancelled, now or when the scheduler answers again).
        Default ``120``. A running server is never stopped because the scheduler is down.""",
    )
    cancel_retry_interval = Float(
        30,
        config=True,
        help="""Seconds before a cancel the scheduler did not take (it was down) is tried again;
        the wait doubles after each failure, up to 20 times this. Default ``30``.""",
    )
    ready_poll_interval = Float(
        0.2,
        config=True,
        help="""Seconds between the hub's checks that a started job's server accepts
        connections, once the job has reported its port. The start returns as soon as it does,
        so JupyterHub's own HTTP check (which backs off with random waits of up to 5 s) passes
        at its first try; a server that accepts nothing within ``http_timeout`` fails the start
        and its job is cancelled. Default ``0.2``; ``0`` leaves the wait to JupyterHub.""",
    )

    afhub_runs_images = True  # Apptainer: a kubespawner_override image becomes the job's image
    afhub_cancel_gone: re.Pattern  # a cancel's error text saying the job is gone already
    _afhub_job_ready = False  # the server of the current job came up (kept in the state)
    _afhub_job_submitted = ""  # the job this start submitted
    _afhub_starting = False  # inside start(): odd or missing scheduler answers end it
    _afhub_unanswered_since: float | None = None  # first of a run of unanswered queries
    _afhub_secrets_path = ""  # the credentials file of this start (until the job reads it)

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

    def afhub_command_env(self) -> dict[str, str]:
        """The environment of every scheduler command besides the submission: the search path,
        the locale and the scheduler's variables. Never the hub's own environment: it holds the
        hub's secrets, and ``sudo -E`` hands it to a process of the user's account."""
        names = ("PATH", "LANG", "LC_ALL", *self.afhub_scheduler_env)
        return {k: os.environ[k] for k in names if k in os.environ}

    def cmd_formatted_for_batch(self):
        """The server command line, each argument shell-quoted (``cmd`` holds the wrapper),
        started through the credentials reader when this start has a credentials file."""
        argv = [*self.cmd, *self.get_args()]
        if self._afhub_secrets_path:
            argv = jobsecrets.reader_argv(self._afhub_secrets_path, argv)
        return " ".join(shlex.quote(a) for a in argv)

    def afhub_prefixed(self, command: str, **extra) -> str:
        """``exec_prefix`` + ``command``, both formatted with the template variables."""
        subvars = {**self.get_req_subvars(), **extra}
        return " ".join(
            (format_template(self.exec_prefix, **subvars), format_template(command, **subvars))
        )

    # ---- submission -------------------------------------------------------------------

    def afhub_subvars(self, env: dict | None = None) -> dict:
        """Template variables: the ``req_*`` values only (never ``user_options``). With the
        submission environment ``env``, ``keepvars`` names exactly its variables (batchspawner
        computes them once per spawner object, which may be long before this start)."""
        subvars = self.get_req_subvars()
        if env is not None:
            subvars["keepvars"] = ",".join([*env, *filter(None, [self.req_keepvars_extra])])
        check_subvars(subvars)
        return subvars

    async def submit_batch_script(self):
        self.ip = self.server_ip
        env, secret = jobsecrets.split_env(self.get_env())
        subvars = self.afhub_subvars(env)
        self._afhub_secrets_path = ""
        if secret:
            await self._afhub_write_secrets(secret)
        cmd = self.afhub_prefixed(self.batch_submit_cmd)
        subvars["cmd"] = self.cmd_formatted_for_batch()
        script = await self._get_batch_script(**subvars)
        self.log.info("Submitting the server job of %s: %s", self._log_name, cmd)
        try:
            out = await self.run_command(cmd, input=script, env=env)
        except RuntimeError as e:
            await self._afhub_remove_secrets()
            raise scheduler_error(f"{self.afhub_scheduler} did not accept the job", e) from None
        try:
            self.job_id = self.afhub_parse_job_id(out)
        except ValueError:
            await self._afhub_remove_secrets()
            self.log.warning(
                "%s answered the submission of %s with %r",
                self.afhub_scheduler,
                self._log_name,
                out,
            )
            raise scheduler_error(
                f"{self.afhub_scheduler} answered the submission with something that is not a "
                "job id",
                ValueError(repr(out[:200])),
            ) from None
        self.log.info("Server job of %s: %s", self._log_name, self.job_id)
        # batchspawner forgets job_id when a status query fails during the start; this copy is
        # what a failed, timed-out or cancelled start cancels
        self._afhub_job_submitted = self.job_id
        self._afhub_save_state()
        return self.job_id

    def afhub_parse_job_id(self, out: str) -> str:  # pragma: no cover - per backend
        raise NotImplementedError

    async def _afhub_write_secrets(self, secret: dict) -> None:
        """Write the job's secrets as the user's account (see :mod:`.secrets`)."""
        try:
            path = jobsecrets.secrets_path(self.req_homedir, self.name, os.urandom(8).hex())
            text = jobsecrets.secrets_text(secret)
        except ValueError as e:
            raise _no_account(str(e)) from None
        try:
            await self.run_command(
                self.afhub_prefixed(jobsecrets.write_command(path)),
                input=text,
                env=self.afhub_command_env(),
            )
        except RuntimeError as e:
            raise scheduler_error(
                f"Your server's credentials could not be written to {posixpath.dirname(path)}", e
            ) from None
        self._afhub_secrets_path = path

    async def _afhub_remove_secrets(self) -> None:
        path, self._afhub_secrets_path = self._afhub_secrets_path, ""
        if not path:
            return
        try:
            await self.run_command(self.afhub_prefixed(jobsecrets.remove_command(path)))
        except Exception as e:  # the home may be unreachable; the file holds a revoked token
            self.log.warning("Removing %s of %s: %s", path, self._log_name, e)

    def _afhub_save_state(self) -> None:
        """Record the job id now, so that a hub restart during the start still knows the job."""
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None and self.db is not None:
            orm_spawner.state = self.get_state()
            self.db.commit()

    # ---- scheduler answers ------------------------------------------------------------

    def afhub_classify(self, text: str) -> JobState:  # pragma: no cover - per backend
        raise NotImplementedError

    def afhub_job_state(self) -> JobState:
        text = self.job_status or ""
        if text.startswith(QUERY_FAILED):
            return JobState("unknown", message=text[len(QUERY_FAILED) :])
        return self.afhub_classify(text)

    async def afhub_query_text(self) -> str:
        """The status query's answer, or its error text. A query that failed without saying
        why (no error text, or the command could not run) is marked :data:`QUERY_FAILED`: the
        scheduler did not answer, never "the job is gone" (batchspawner reads both as gone)."""
        cmd = self.afhub_prefixed(self.batch_query_cmd, job_id=self.job_id)
        try:
            return await self.run_command(cmd)
        except RuntimeError as e:
            text = str(e.args[0]) if e.args else ""
            return text if text.strip() else QUERY_FAILED + "the status query failed silently"
        except Exception as e:  # could not run at all (fork, sudo missing, ...)
            return QUERY_FAILED + f"the status query could not run ({type(e).__name__}: {e})"

    def state_ispending(self):
        return self.afhub_job_state().kind == "pending"

    def state_isrunning(self):
        return self.afhub_job_state().kind == "running"

    def state_isunknown(self):
        return self.afhub_job_state().kind in ("unknown", "unreadable")

    def state_gethost(self):
        return self.afhub_job_state().host

    async def query_job_status(self):
        # batchspawner's query, but a failed query is never taken for a finished job
        self.job_status = await self.afhub_query_text() if self.job_id else ""
        state = self.afhub_job_state() if self.job_id else JobState("gone")
        status = _STATUS.get(state.kind, JobStatus.NOTFOUND)
        now = time.monotonic()
        if state.kind != "unknown":
            if self._afhub_unanswered_since is not None and not self._afhub_starting:
                self.log.info(
                    "%s answers again about job %s of %s: %s",
                    self.afhub_scheduler,
                    self.job_id,
                    self._log_name,
                    state.kind,
                )
            self._afhub_unanswered_since = None
        elif self._afhub_unanswered_since is None:
            self._afhub_unanswered_since = now
            if not self._afhub_starting:
                self.log.warning(
                    "%s did not answer the status query of job %s of %s (%s); the server is "
                    "kept as it is until %s answers",
                    self.afhub_scheduler,
                    self.job_id,
                    self._log_name,
                    state.message,
                    self.afhub_scheduler,
                )
        if self._afhub_starting:
            sched = self.afhub_scheduler
            if state.kind == "unreadable":
                raise SchedulerTrouble(
                    f"{sched} answered the status query with something afhub cannot read "
                    f"({state.message!r})"
                )
            if state.kind == "held":
                raise SchedulerTrouble(state.message)
            if state.kind == "unknown" and now - self._afhub_unanswered_since > max(
                self.scheduler_timeout, 0
            ):
                raise SchedulerTrouble(
                    f"{sched} has not answered for {int(now - self._afhub_unanswered_since)} s "
                    f"({state.message}); the job is cancelled when {sched} answers again"
                )
        elif state.kind == "unreadable":
            self.log.warning(
                "%s answered the status query of job %s with %r",
                self.afhub_scheduler,
                self.job_id,
                state.message,
            )
        return status

    # ---- start / stop / poll ----------------------------------------------------------

    async def start(self):
        """batchspawner's start (the mixin's start wraps this): a start that fails, times out
        or is cancelled cancels its job; the node name becomes the address the hub uses."""
        self._afhub_job_ready = False
        self._afhub_starting = True
        self._afhub_unanswered_since = None
        try:
            ip, port = await super().start()
            ip = self.node_addresses.get(ip, ip)
            await self.afhub_wait_listening(ip, port)
        except BaseException as e:
            # failed, timed out (JupyterHub cancels us) or cancelled from the progress page
            await asyncio.shield(self._afhub_cancel_quietly())
            self.job_id = ""  # what is left to cancel is in the deferred cancels
            if isinstance(e, RuntimeError):  # batchspawner: job vanished, no host, ...
                raise scheduler_error(f"The {self.afhub_scheduler} job did not start", e) from None
            raise
        finally:
            self._afhub_starting = False
        self.ip = ip
        self._afhub_job_ready = True
        self._afhub_secrets_path = ""  # read and removed by the job
        return self.ip, port

    async def afhub_wait_listening(self, ip: str, port: int) -> None:
        """Return as soon as the job's server accepts connections on ``ip:port``, checking
        every ``ready_poll_interval`` seconds for at most ``http_timeout`` (then a clear spawn
        error). batchspawner returns when the job reports its port, before the server listens;
        JupyterHub's HTTP check after that backs off with random waits (up to 5 s), which cost
        every start about a second. A TCP connect is enough here (TLS or not): JupyterHub's
        check runs its first request at once and finds the server answering."""
        interval = self.ready_poll_interval
        if interval <= 0:
            return
        timeout = self.http_timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, port), max(1.0, interval * 5)
                )
            except (OSError, asyncio.TimeoutError):
                if time.monotonic() >= deadline:
                    raise scheduler_error(
                        "Your server's job is running but the server did not start",
                        TimeoutError(f"nothing listened on {ip}:{port} within {timeout:g} s"),
                    ) from None
                await asyncio.sleep(interval)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def afhub_cancel_job(self, job: str) -> bool:
        """Cancel ``job``: True when it is cancelled or gone, False when the scheduler did not
        take the cancel (down, unreachable)."""
        try:
            await self.run_command(self.afhub_prefixed(self.batch_cancel_cmd, job_id=job))
        except RuntimeError as e:
            if self.afhub_cancel_gone.search(str(e)):
                return True
            self.log.warning("Cancelling job %s of %s: %s", job, self._log_name, e)
            return False
        return True

    async def _afhub_cancel_quietly(self) -> None:
        """Cancel the job of this start; if the scheduler does not take it, keep it for later."""
        job = self.job_id or self._afhub_job_submitted
        self._afhub_job_submitted = ""
        if job and not await self.afhub_cancel_job(job):
            self.afhub_defer_cancel(job)
        await self._afhub_remove_secrets()

    # deferred cancels: job ids in the spawner's state ("afhub_cancel_pending"), retried by one
    # task per server that follows the live spawner object (JupyterHub makes a new one after a
    # stop, from the state in the database)

    def afhub_defer_cancel(self, job: str) -> None:
        pending = list(getattr(self, "_afhub_cancel_pending", []))
        if job not in pending:
            pending.append(job)
        self._afhub_cancel_pending = pending
        self.log.warning(
            "%s did not take the cancel of job %s of %s: trying again every %.0f s or more",
            self.afhub_scheduler,
            job,
            self._log_name,
            self.cancel_retry_interval,
        )
        self._afhub_save_state()
        self._afhub_schedule_retries()

    def _afhub_schedule_retries(self) -> None:
        key = (getattr(self.user, "name", ""), self.name)
        task = _RETRIES.get(key)
        if task is not None and not task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        _RETRIES[key] = loop.create_task(self._afhub_retry_cancels())

    def _afhub_live(self):
        """The spawner object JupyterHub uses now for this server (self if none other)."""
        try:
            return self.user.spawners[self.name]
        except Exception:
            return self

    async def _afhub_retry_cancels(self) -> None:
        wait = max(self.cancel_retry_interval, 0.1)
        while True:
            await asyncio.sleep(wait)
            live = self._afhub_live()
            pending = list(getattr(live, "_afhub_cancel_pending", []))
            if not pending:
                return
            done = []
            for job in pending:
                try:
                    if await live.afhub_cancel_job(job):
                        done.append(job)
                except Exception as e:  # keep retrying whatever went wrong this time
                    live.log.warning("Cancelling job %s of %s: %s", job, live._log_name, e)
            if done:
                live._afhub_cancel_pending = [
                    j for j in live._afhub_cancel_pending if j not in done
                ]
                live.log.info("Cancelled job(s) %s of %s", ", ".join(done), live._log_name)
                live._afhub_save_state()
            if not live._afhub_cancel_pending:
                return
            wait = min(wait * 2, 20 * max(self.cancel_retry_interval, 0.1))

    async def run_command(self, cmd, input=None, env=None):
        # every command gets a minimal environment (afhub_command_env), never the hub's
        if env is None:
            env = self.afhub_command_env()
        # batchspawner's run_command swallows the cancellation of a start (bare except): give
        # it back, so a cancelled start stops instead of polling on
        try:
            return await super().run_command(cmd, input=input, env=env)
        finally:
            task = asyncio.current_task()
            if task is not None and getattr(task, "cancelling", lambda: 0)():
                raise asyncio.CancelledError()  # noqa: B012

    async def stop(self, now=False):
        job = self.job_id or self._afhub_job_submitted
        self._afhub_job_submitted = ""
        if not job:
            return
        self.job_id = job
        if not await self.afhub_cancel_job(job):
            self.afhub_defer_cancel(job)  # the server is gone for the hub; the job goes later
            self.job_id = ""
            return
        await self._afhub_remove_secrets()
        if now:
            return
        for _ in range(10):
            status = await self.query_job_status()
            if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                return
            await asyncio.sleep(1)
        self.log.warning("Job %s of %s has not ended yet", job, self._log_name)

    async def poll(self):
        status = await self.query_job_status()
        kind = self.afhub_job_state().kind if self.job_id else "gone"
        if kind != "gone" and not self._afhub_job_ready:
            if not getattr(self, "_spawn_pending", False):
                # a job from a start that never completed (the hub restarted meanwhile)
                self.log.warning(
                    "Cancelling job %s of %s: its server never came up", self.job_id, self._log_name
                )
                await self._afhub_cancel_quietly()
                self.clear_state()
                return 1
            return None
        if kind == "held":  # a running server's job the scheduler stopped for an error
            await self._afhub_cancel_quietly()
        elif status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return None
        self.clear_state()
        return 1

    # ---- progress ---------------------------------------------------------------------

    async def progress(self):
        """Queue state as it changes: the scheduler's pending reason, then the node."""
        last = None
        while True:
            state = self.afhub_job_state() if self.job_id else None
            if state is None:
                message = f"Submitting the job to {self.afhub_scheduler}"
            elif state.kind in ("pending", "held"):
                message = state.message
            elif state.kind == "running":
                message = "Job running; waiting for the server to answer"
            elif state.kind == "unknown":
                message = f"{self.afhub_scheduler} is not answering ({state.message}); still trying"
            else:
                message = None
            if message and message != last:
                yield {
                    "progress": 50 if state and state.kind == "running" else 30,
                    "message": message,
                }
                last = message
            if state is not None and state.kind == "running":
                return
            await asyncio.sleep(1)

    # ---- state ------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.job_id and self._afhub_job_ready:
            state["afhub_job_ready"] = True
        pending = getattr(self, "_afhub_cancel_pending", [])
        if pending:
            state["afhub_cancel_pending"] = list(pending)
        return state

    def load_state(self, state):
        super().load_state(state)
        self._afhub_job_ready = bool((state or {}).get("afhub_job_ready"))
        pending = (state or {}).get("afhub_cancel_pending") or []
        self._afhub_cancel_pending = [str(j) for j in pending]
        if self._afhub_cancel_pending:
            self._afhub_schedule_retries()

    def clear_state(self):
        # deferred cancels outlive the server: they are kept until the scheduler took them
        super().clear_state()
        self._afhub_job_ready = False


# the task retrying deferred cancels, per (hub user, server name)
_RETRIES: dict[tuple[str, str], asyncio.Task] = {}
