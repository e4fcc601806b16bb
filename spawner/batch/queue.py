"""Scheduler answers about one job: pure classification and progress-page sentences.

Pure: the text a status query printed in, a :class:`JobState` out. Slurm's status line is
``"<STATE> <REASON> <HOST>"`` (``squeue -h -j <id> -o '%T %r %B'``; reason codes from
``man squeue``, JOB REASON CODES). HTCondor's is the job ad as JSON
(``condor_q <id> -json -attributes ...``, :data:`CONDOR_ATTRIBUTES`): ``JobStatus`` and, while
the job waits, why (``HoldReason``/``HoldReasonCode`` for held jobs, ``LastRejMatchReason`` from
the negotiator's last cycle, the data ``condor_q -better-analyze`` starts from).

Every answer falls into one kind: ``pending``, ``running``, ``held`` (stopped by the scheduler
for an error; the start fails with the reason), ``gone`` (finished, removed, unknown to the
scheduler), ``unknown`` (the scheduler did not answer) or ``unreadable`` (an answer afhub
cannot read: never taken for "gone", so a running server is not dropped because of it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Slurm reason code -> what a physicist should read
SLURM_REASONS = {
    "None": "waiting to be scheduled",
    "Resources": "waiting for resources: the requested CPUs, memory or GPUs are in use",
    "Priority": "waiting behind jobs of higher priority",
    "Dependency": "waiting for another job",
    "BeginTime": "waiting for its start time",
    "JobHeldAdmin": "held by an administrator",
    "JobHeldUser": "held",
    "ReqNodeNotAvail": "the nodes it needs are not available (down, drained or reserved)",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its run time is longer than the partition allows",
    "Reservation": "waiting for its reservation",
    "QOSMaxJobsPerUserLimit": "you have as many jobs running as your QOS allows",
    "QOSMaxGRESPerUser": "you use as many GPUs as your QOS allows",
    "QOSMaxCpuPerUserLimit": "you use as many CPUs as your QOS allows",
    "QOSGrpGRES": "the QOS's GPUs are all in use",
    "QOSGrpCpuLimit": "the QOS's CPUs are all in use",
    "AssocGrpGRES": "your account's GPU limit is reached",
    "AssocGrpCpuLimit": "your account's CPU limit is reached",
    "AssocMaxJobsLimit": "your account's job limit is reached",
    "launch failed requeued held": "its launch failed; held for an administrator",
}


@dataclass(frozen=True)
class JobState:
    kind: str  # pending | running | held | gone | unknown | unreadable
    host: str = ""  # execution host of a running job
    message: str = ""  # what the progress page says (pending, held), or the odd answer


# Slurm job states (squeue %T) by kind; anything else is an answer afhub cannot read
SLURM_PENDING = {
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
    "SUSPENDED", "STOPPED", "SPECIAL_EXIT",
}  # fmt: skip
SLURM_RUNNING = {"RUNNING", "RESIZING", "SIGNALING"}
SLURM_ENDED = {
    "COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "STAGE_OUT",
}  # fmt: skip
# client errors meaning "slurmctld did not answer" (not "no such job")
_SLURM_UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Zero Bytes were transmitted|Communication connection failure|Connection timed out",
    re.I,
)
_SLURM_GONE = re.compile(r"Invalid job id specified", re.I)


def _first_line(text: str, limit: int = 200) -> str:
    return ((text or "").strip().splitlines() or [""])[0][:limit]


def slurm_job_state(text: str) -> JobState:
    """What one ``squeue -h -j <id> -o '%T %r %B'`` answer (or its error text) says."""
    text = (text or "").strip()
    if not text or _SLURM_GONE.search(text):
        return JobState("gone")
    if _SLURM_UNREACHABLE.search(text):
        return JobState("unknown", message=_first_line(text))
    words = text.split()
    state = words[0]
    if state in SLURM_PENDING:
        return JobState("pending", message=pending_message("Slurm", text))
    if state in SLURM_RUNNING:
        host = words[-1] if len(words) >= 3 else ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", host) or host == "n/a":
            return JobState("unreadable", message=_first_line(text))
        return JobState("running", host=host)
    if state in SLURM_ENDED:
        return JobState("gone", message=state)
    return JobState("unreadable", message=_first_line(text))


def slurm_reason(status: str) -> str | None:
    """The reason code of a Slurm status line, or None."""
    parts = (status or "").split()
    if len(parts) < 2:
        return None
    # the reason may hold spaces ("launch failed requeued held"); the host is the last word
    words = parts[1:-1] if len(parts) > 2 else parts[1:]
    return " ".join(words) or None


def pending_message(scheduler: str, status: str) -> str:
    """``"Queued in Slurm (Resources): waiting for resources: ..."`` for a pending job."""
    reason = slurm_reason(status)
    if reason is None:
        return "Queued in Slurm"
    base = reason.split("(", 1)[0]
    text = SLURM_REASONS.get(base) or SLURM_REASONS.get(reason)
    if text is None and base.startswith("QOS"):
        text = "a limit of your QOS is reached"
    elif text is None and base.startswith("Assoc"):
        text = "a limit of your account is reached"
    return f"Queued in Slurm ({reason})" + (f": {text}" if text else "")


# ---- HTCondor -----------------------------------------------------------------------------

CONDOR_ATTRIBUTES = (
    "ClusterId",
    "JobStatus",
    "RemoteHost",
    "HoldReason",
    "HoldReasonCode",
    "LastRejMatchReason",
    "NumJobStarts",
)
# JobStatus values
CONDOR_IDLE, CONDOR_RUNNING, CONDOR_REMOVED, CONDOR_COMPLETED, CONDOR_HELD = 1, 2, 3, 4, 5
CONDOR_TRANSFERRING, CONDOR_SUSPENDED = 6, 7
# holds that are not errors: condor_hold by a person (1), submitted on hold (15), spooling (16)
CONDOR_HOLD_WAITS = {1, 15, 16}
# the negotiator's LastRejMatchReason -> what a physicist should read
CONDOR_REASONS = {
    "no match found": "no machine with the requested CPUs, memory, GPUs or architecture is free",
    "insufficient priority": "waiting behind users of higher priority in the pool",
    "PREEMPTION_REQUIREMENTS == False": "the matching machines are busy and may not be preempted",
    "submitter limit exceeded": "your share of the pool is in use",
    "group quota exceeded": "your accounting group's quota is in use",
    "concurrency limit reached": "a concurrency limit is reached",
}
_CONDOR_UNREACHABLE = re.compile(
    r"Failed to fetch ads|Failed to connect|Can't find address|communication error|"
    r"Connection refused|SECMAN:\d+:|timed out",
    re.I,
)


def condor_job_state(text: str) -> JobState:
    """What one ``condor_q <id> -json -attributes ...`` answer (or its error text) says."""
    text = (text or "").strip()
    if not text or text == "[]":
        return JobState("gone")
    if not text.startswith("["):
        if _CONDOR_UNREACHABLE.search(text):
            return JobState("unknown", message=_first_line(text))
        return JobState("unreadable", message=_first_line(text))
    try:
        ads = json.loads(text)
    except ValueError:
        return JobState("unreadable", message=_first_line(text))
    if not isinstance(ads, list) or len(ads) != 1 or not isinstance(ads[0], dict):
        return JobState("unreadable", message=_first_line(text))
    ad = ads[0]
    status = ad.get("JobStatus")
    if status in (CONDOR_IDLE,):
        return JobState("pending", message=condor_pending_message(ad))
    if status in (CONDOR_RUNNING, CONDOR_TRANSFERRING, CONDOR_SUSPENDED):
        host = str(ad.get("RemoteHost") or "").rsplit("@", 1)[-1]
        if status != CONDOR_RUNNING or not host:
            return JobState("pending", message=condor_pending_message(ad))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", host):
            return JobState("unreadable", message=_first_line(text))
        return JobState("running", host=host)
    if status == CONDOR_HELD:
        kind = "pending" if ad.get("HoldReasonCode") in CONDOR_HOLD_WAITS else "held"
        return JobState(kind, message=condor_pending_message(ad))
    if status in (CONDOR_REMOVED, CONDOR_COMPLETED):
        return JobState("gone")
    return JobState("unreadable", message=_first_line(text))


def _clip(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def condor_pending_message(ad: dict) -> str:
    """The progress-page sentence for a job ad that is not running (yet)."""
    status = ad.get("JobStatus")
    if status == CONDOR_HELD:
        reason = _clip(ad.get("HoldReason") or "no reason given")
        if ad.get("HoldReasonCode") in CONDOR_HOLD_WAITS:
            return f"Held in HTCondor: {reason}"
        return f"HTCondor held the job: {reason}"
    if status == CONDOR_TRANSFERRING:
        return "HTCondor is transferring the job's output"
    if status == CONDOR_SUSPENDED:
        return "Suspended by HTCondor (the machine's policy)"
    if status == CONDOR_RUNNING:
        return "Job running; HTCondor has not reported its machine yet"
    reason = ad.get("LastRejMatchReason")
    if not reason:
        restarted = (ad.get("NumJobStarts") or 0) > 0
        return (
            "Queued in HTCondor: back in the queue after its machine was lost; waiting to be matched again"
            if restarted
            else "Queued in HTCondor: waiting for the next negotiation cycle"
        )
    reason = _clip(reason, 120)
    text = CONDOR_REASONS.get(reason)
    if text is None and "concurrency limit" in reason:
        text = CONDOR_REASONS["concurrency limit reached"]
    return f"Queued in HTCondor ({reason})" + (f": {text}" if text else "")
