"""Scheduler queue states as messages for the spawn progress page.

Pure: batchspawner's job status text in, one sentence out. Slurm's status line is
``"<STATE> <REASON> <HOST>"`` (``squeue -o '%T %r %B'``); the reason codes are Slurm's
(``man squeue``, JOB REASON CODES).
"""

from __future__ import annotations

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
    if scheduler != "Slurm":
        return f"Queued in {scheduler}: waiting to be matched to a machine"
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
