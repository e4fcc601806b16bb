"""Scheduler answers: what afhub reads in them (pure, ``spawner/batch/queue.py``) and what a start
does with odd ones (a clear error, its job cancelled).

HTCondor: no daemon can run here, so ``condor_q``'s answers are recorded ones
(``tests/data/condor_q/``, see its README) and the spawner is driven at one boundary, the
processes it starts (``run_command``), answered with those recordings. Slurm's answers are the
lines ``squeue -h -j <id> -o '%T %r %B'`` prints (the real Slurm runs in ``test_batch_slurm.py``,
including slurmctld going down mid-start).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from afhub.spawner.batch.queue import JobState, condor_job_state, slurm_job_state
from test_batch_secrets import Recorder, _ready
from test_batch_translate import _spawner

RECORDED = Path(__file__).parent / "data" / "condor_q"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


@pytest.mark.parametrize(
    "answer, state",
    [
        ("idle_new.json", JobState("pending", message="Queued in HTCondor: waiting for the next negotiation cycle")),
        ("idle_no_match.json", JobState("pending", message="Queued in HTCondor (no match found): no machine with the requested CPUs, memory, GPUs or architecture is free")),
        ("idle_priority.json", JobState("pending", message="Queued in HTCondor (insufficient priority): waiting behind users of higher priority in the pool")),
        ("idle_requeued.json", JobState("pending", message="Queued in HTCondor: back in the queue after its machine was lost; waiting to be matched again")),
        ("held_by_admin.json", JobState("pending", message="Held in HTCondor: via condor_hold (by user condor_admin)")),
        ("held_error.json", JobState("held", message="HTCondor held the job: Error from slot1_3@spar0412.sdcc.bnl.gov: Failed to execute '/bin/sh' with arguments -c 'exec /bin/sh -c ...': (errno=2: 'No such file or directory')")),
        ("running.json", JobState("running", host="spar0412.sdcc.bnl.gov")),
        ("removed.json", JobState("gone")),
        ("schedd_down.txt", JobState("unknown", message="-- Failed to fetch ads from: <130.199.48.12:9618?addrs=130.199.48.12-9618&alias=spar0101.sdcc.bnl.gov&noUDP&sock=schedd_2417_7b2c> : spar0101.sdcc.bnl.gov"[:200])),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_condor_recorded_answers(answer, state):
    assert condor_job_state(recorded(answer)) == state


@pytest.mark.parametrize(
    "text, kind",
    [
        ("", "gone"),  # condor_q prints nothing for a job that left the queue
        ("[]", "gone"),
        ("[{", "unreadable"),
        ('[{"JobStatus": 9}]', "unreadable"),
        ('[{"JobStatus": 1}, {"JobStatus": 2}]', "unreadable"),
        ('[{"JobStatus": 2, "RemoteHost": "slot1@bad host"}]', "unreadable"),
        ('[{"JobStatus": 2}]', "pending"),  # running, machine not reported yet
        ("Segmentation fault", "unreadable"),
    ],
)
def test_condor_odd_answers(text, kind):
    assert condor_job_state(text).kind == kind


@pytest.mark.parametrize(
    "text, state",
    [
        ("PENDING Resources n/a", JobState("pending", message="Queued in Slurm (Resources): waiting for resources: the requested CPUs, memory or GPUs are in use")),
        ("PENDING QOSMaxGRESPerUser n/a", JobState("pending", message="Queued in Slurm (QOSMaxGRESPerUser): you use as many GPUs as your QOS allows")),
        ("RUNNING None sdfampere012", JobState("running", host="sdfampere012")),
        ("", JobState("gone")),
        ("slurm_load_jobs error: Invalid job id specified", JobState("gone")),
        ("COMPLETED None sdfmilan001", JobState("gone", message="COMPLETED")),
        ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", JobState("unknown", message="slurm_load_jobs error: Unable to contact slurm controller (connect failure)")),
        ("slurm_load_jobs error: Socket timed out on send/recv operation", JobState("unknown", message="slurm_load_jobs error: Socket timed out on send/recv operation")),
        ("RUNNING None", JobState("unreadable", message="RUNNING None")),
        ("<html>502 Bad Gateway</html>", JobState("unreadable", message="<html>502 Bad Gateway</html>")),
    ],
)  # fmt: skip
def test_slurm_answers(text, state):
    assert slurm_job_state(text) == state


# ---- starts that meet odd answers (the process boundary, recorded answers) -----------------


def _condor(answers):
    rec = Recorder(answers)
    sp = _ready(_spawner("CondorProfileSpawner", "htcondor"), {"profile": "cpu"}, rec)
    sp.startup_poll_interval = 0.01
    return sp, rec


async def _start(sp):
    from afhub.spawner.batch import BatchMixin

    return await BatchMixin.start(sp)


async def test_condor_progress_shows_the_negotiators_reason():
    sp, _ = _condor([])
    sp.job_id, sp.job_status = "4122", recorded("idle_no_match.json")
    events, messages = sp.progress(), []
    while not messages or messages[-1].startswith("Profile "):  # the profile comes first
        messages.append((await events.__anext__())["message"])
    await events.aclose()
    assert messages[-1].startswith("Queued in HTCondor (no match found): no machine")


async def test_condor_held_job_ends_the_start_with_the_hold_reason_and_is_removed():
    sp, rec = _condor(
        [
            ("condor_submit", "1 job(s) submitted to cluster 4125."),
            ("condor_q", recorded("held_error.json")),
            ("condor_rm", "All jobs in cluster 4125 have been marked for removal"),
        ]
    )
    with pytest.raises(Exception) as err:
        await _start(sp)
    message = err.value.jupyterhub_message
    assert message.startswith("The HTCondor job did not start: HTCondor held the job: Error from")
    assert [c["cmd"] for c in rec.find("condor_rm")] == ["sudo -E -u alice condor_rm 4125"]
    assert rec.calls[-1]["cmd"].startswith("sudo -E -u alice rm -f /home/alice/.afhub/batch/")
    assert sp.job_id == "" and sp.get_state().get("afhub_cancel_pending") is None


async def test_slurm_unreadable_submission_answer_is_a_clear_error():
    rec = Recorder([("sbatch", "sbatch: warning: something\nno id here")])
    sp = _ready(_spawner("SlurmProfileSpawner", "slurm"), {"profile": "cpu"}, rec)
    with pytest.raises(Exception) as err:
        await _start(sp)
    assert err.value.jupyterhub_message == (
        "Slurm answered the submission with something that is not a job id: "
        "'sbatch: warning: something\\nno id here'"
    )
    assert not sp.job_id and not rec.find("squeue")


async def test_slurm_unreadable_status_answer_ends_the_start_and_cancels_the_job():
    rec = Recorder(
        [("sbatch", "4711"), ("squeue", "<html>502 Bad Gateway</html>"), ("scancel", "")]
    )
    sp = _ready(_spawner("SlurmProfileSpawner", "slurm"), {"profile": "cpu"}, rec)
    sp.startup_poll_interval = 0.01
    with pytest.raises(Exception) as err:
        await _start(sp)
    assert err.value.jupyterhub_message == (
        "The Slurm job did not start: Slurm answered the status query with something afhub "
        "cannot read ('<html>502 Bad Gateway</html>')"
    )
    assert [c["cmd"] for c in rec.find("scancel")] == ["sudo -E -u alice scancel 4711"]


async def test_scheduler_down_ends_the_start_and_the_cancel_is_retried_until_it_is_taken():
    down = RuntimeError(
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    )
    answers = [
        ("sbatch", "4712"),
        ("squeue", down),
        ("scancel", RuntimeError("scancel: error: Kill job error on job id 4712: Unable to contact slurm controller (connect failure)")),
    ]  # fmt: skip
    rec = Recorder(answers)
    sp = _ready(_spawner("SlurmProfileSpawner", "slurm"), {"profile": "gpu-a100"}, rec)
    sp.startup_poll_interval, sp.scheduler_timeout, sp.cancel_retry_interval = 0.01, 0.2, 0.05
    with pytest.raises(Exception) as err:
        await _start(sp)
    message = err.value.jupyterhub_message
    assert message.startswith("The Slurm job did not start: Slurm has not answered for 0 s")
    assert "the job is cancelled when Slurm answers again" in message
    assert sp.get_state()["afhub_cancel_pending"] == ["4712"] and not sp.job_id
    # the state survives clear_state (JupyterHub clears and saves it after a failed start)
    sp.clear_state()
    assert sp.get_state()["afhub_cancel_pending"] == ["4712"]
    # Slurm answers again: the retry takes the cancel and forgets the job
    import asyncio

    answers[2] = ("scancel", "")
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not sp.get_state().get("afhub_cancel_pending"):
            break
    assert "afhub_cancel_pending" not in sp.get_state()
    assert len(rec.find("scancel 4712")) >= 2


async def test_deferred_cancels_come_back_with_the_state_and_are_retried():
    """A hub restarted while a cancel was pending (the state in its database) retries it."""
    import asyncio

    rec = Recorder([("scancel 17", ""), ("scancel 18", RuntimeError("scancel: error: Kill job error on job id 18: Invalid job id specified"))])  # fmt: skip
    sp = _spawner("SlurmProfileSpawner", "slurm", cancel_retry_interval=0.05)
    sp.run_command = rec
    sp.load_state({"job_id": "", "afhub_cancel_pending": ["17", "18"]})
    assert sp.get_state()["afhub_cancel_pending"] == ["17", "18"]
    for _ in range(100):
        await asyncio.sleep(0.05)
        if "afhub_cancel_pending" not in sp.get_state():
            break
    assert "afhub_cancel_pending" not in sp.get_state()  # 17 cancelled, 18 gone already
    assert [c["cmd"] for c in rec.calls] == [
        "sudo -E -u alice scancel 17",
        "sudo -E -u alice scancel 18",
    ]


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("slurm_load_jobs error: Unable to contact slurm controller (connect failure)"),
        RuntimeError(""),  # squeue failed without a word (killed, crashed)
        OSError(24, "Too many open files"),  # the query could not even run
        RuntimeError("squeue: error: something new"),  # an error afhub cannot read
    ],
    ids=["unreachable", "silent", "cannot-run", "odd"],
)
async def test_a_failing_status_query_never_stops_a_running_server(failure):
    """The hub polls a running server while the status query errors: the server stays
    (``poll`` is None), nothing is cancelled, the state is "unknown"; the next real answer
    sets it. (The real outage, slurmctld stopped during a hub restart, is in
    ``test_slurm_postgres.py``.)"""
    from afhub.spawner.batch.lifecycle import JobStatus

    answers = [("squeue", failure)]
    rec = Recorder(answers)
    sp = _ready(_spawner("SlurmProfileSpawner", "slurm"), {"profile": "cpu"}, rec)
    sp.load_state({"job_id": "4720", "job_status": "RUNNING None node1", "afhub_job_ready": True})
    for _ in range(2):
        assert await sp.poll() is None
        assert await sp.query_job_status() == JobStatus.UNKNOWN
    assert not rec.find("scancel") and sp.job_id == "4720"
    assert sp.get_state()["job_id"] == "4720" and sp.get_state()["afhub_job_ready"]
    answers[0] = ("squeue", "RUNNING None node1")
    assert await sp.poll() is None and sp.state_gethost() == "node1"
    answers[0] = ("squeue", RuntimeError("slurm_load_jobs error: Invalid job id specified"))
    assert await sp.poll() == 1  # a real "no such job" still ends the server
    assert not rec.find("scancel")
