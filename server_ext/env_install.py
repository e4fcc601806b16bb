"""Background "make this environment runnable" jobs (ipykernel install), one per environment.

What lives here: `InstallJobs`, which runs the configured install command for an environment as
an asyncio subprocess and keeps its state (`running`, `succeeded`, `failed`), return code and the
tail of its output for the REST API. Requested explicitly by a user through
POST afhub/api/environments/<id>/kernel; never started by listing kernels.

What must not live here: deciding whether an environment needs an install (`kernel_discovery.py`).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time

_TAIL = 4000


class InstallJobs:
    def __init__(self, log: logging.Logger | None = None):
        self.log = log or logging.getLogger(__name__)
        self._jobs: dict[str, dict] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    def status(self, eid: str) -> dict | None:
        job = self._jobs.get(eid)
        return dict(job) if job else None

    def start(self, eid: str, argv: list[str], *, timeout: float) -> dict:
        """Start the install unless one is running for this environment; return its status."""
        job = self._jobs.get(eid)
        if job and job["state"] == "running":
            return dict(job)
        self._jobs[eid] = {
            "state": "running",
            "command": list(argv),
            "returncode": None,
            "output": "",
            "started": time.time(),
            "finished": None,
        }
        self._tasks[eid] = asyncio.ensure_future(self._run(eid, argv, timeout))
        return dict(self._jobs[eid])

    async def _run(self, eid: str, argv: list[str], timeout: float) -> None:
        job = self._jobs[eid]
        self.log.info("afhub kernels: installing ipykernel: %s", shlex.join(argv)[:500])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as e:
            job.update(state="failed", output=f"cannot run {argv[0]}: {e.strerror}")
            job["finished"] = time.time()
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            job["output"] = (out or b"").decode(errors="replace")[-_TAIL:]
            job.update(state="failed", returncode=proc.returncode)
            job["output"] += f"\nkilled after {timeout:g} s"
        else:
            job["output"] = (out or b"").decode(errors="replace")[-_TAIL:]
            ok = proc.returncode == 0
            job.update(state="succeeded" if ok else "failed", returncode=proc.returncode)
        job["finished"] = time.time()
        self.log.info("afhub kernels: install %s: %s", job["state"], " ".join(argv))
