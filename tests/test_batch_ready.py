"""Batch starts return as soon as the job's server listens (``BatchMixin.afhub_wait_listening``).

batchspawner's start returns when the job reports its port, before the server listens; afhub's
start then waits for the server itself, so JupyterHub's backed-off HTTP check passes at its
first try. These tests use real sockets on loopback. The scheduler is not involved in what is
tested here, so ``test_a_server_that_never_listens_cancels_its_job`` replaces batchspawner's own
start with one that reports a port nobody listens on, and records the cancel instead of running
``scancel``; the real-Slurm path (spawn to JupyterLab, cancels) is in ``test_batch_slurm.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from batchspawner import SlurmSpawner
from facility import free_port
from tornado import web
from traitlets.config import Config


class _User:
    name = "alice"
    groups: list = []


def _spawner(**traits):
    from afhub.spawner.batch import SlurmProfileSpawner

    c = Config()
    c.ProfileSpawnerMixin.profiles = [{"display_name": "CPU", "slug": "cpu"}]
    sp = SlurmProfileSpawner(config=c, user=_User())
    for k, v in traits.items():
        setattr(sp, k, v)
    return sp


async def test_returns_once_the_server_listens():
    sp = _spawner(ready_poll_interval=0.05, http_timeout=30)
    port = free_port()
    connected = asyncio.Event()

    async def on_connect(reader, writer):
        connected.set()
        writer.close()

    async def listen_later():
        await asyncio.sleep(0.5)  # the server comes up while the spawner is already waiting
        return await asyncio.start_server(on_connect, "127.0.0.1", port)

    later = asyncio.ensure_future(listen_later())
    await sp.afhub_wait_listening("127.0.0.1", port)
    server = await later
    try:
        assert later.done()  # it did not return before the server listened
        await asyncio.wait_for(connected.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_a_clear_spawn_error():
    sp = _spawner(ready_poll_interval=0.05, http_timeout=1)
    port = free_port()
    with pytest.raises(web.HTTPError) as e:
        await sp.afhub_wait_listening("127.0.0.1", port)
    assert e.value.status_code == 503
    message = e.value.jupyterhub_message
    assert "did not start" in message and f"127.0.0.1:{port}" in message and "1 s" in message
    assert "Traceback" not in message


async def test_interval_zero_leaves_the_wait_to_jupyterhub():
    sp = _spawner(ready_poll_interval=0, http_timeout=1)
    # returns at once although nothing listens (JupyterHub's own check then decides)
    await asyncio.wait_for(sp.afhub_wait_listening("127.0.0.1", free_port()), 0.5)


async def test_a_server_that_never_listens_cancels_its_job(monkeypatch):
    sp = _spawner(ready_poll_interval=0.05, http_timeout=1)
    port = free_port()
    cancelled = []

    async def base_start(self):  # batchspawner's start: job submitted, running, port reported
        self.job_id = "42"
        return "127.0.0.1", port

    async def afhub_cancel_job(self, job):  # the scheduler takes the cancel
        cancelled.append(job)
        return True

    monkeypatch.setattr(SlurmSpawner, "start", base_start)
    monkeypatch.setattr(type(sp), "afhub_cancel_job", afhub_cancel_job)
    from afhub.spawner.batch import BatchMixin

    with pytest.raises(web.HTTPError) as e:
        await BatchMixin.start(sp)  # the batch part of the start (no account check, no profile)
    assert "did not start" in e.value.jupyterhub_message
    assert cancelled == ["42"]
    assert sp._afhub_job_ready is False
