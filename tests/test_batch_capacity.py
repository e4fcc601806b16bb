"""Idle capacity on the spawn page: parsers (pure), the cache (a fake clock and query at the one
boundary), the HTCondor collector query, and what the page shows.

``data/sinfo_slac_like.txt`` is ``sinfo`` output in the format afhub requests
(``capacity.SINFO_ARGS``) for a SLAC-like cluster, written after the real ``sinfo`` of the
test cluster (``test_batch_slurm.py`` reads the real one). No HTCondor collector can run here:
``data/condor_startd_ads.txt`` is a collector answer in ``condor_status -long`` form for a
BNL-like pool, parsed with the real ``classad2`` bindings, and stands in for
``capacity.collector_ads`` - the one faked boundary.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import classad2
import pytest
from afhub.spawner.batch import capacity
from afhub.spawner.batch.capacity import (
    Capacity,
    CapacityCache,
    CapacityParseError,
    PartitionCapacity,
    describe,
    parse_condor_slots,
    parse_gres,
    parse_sinfo,
)

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "text, gpus",
    [
        ("(null)", {}),
        ("gpu:0", {"": 0}),
        ("gpu:a100:4(S:0-1)", {"a100": 4}),
        ("gpu:a100:3(IDX:0-2)", {"a100": 3}),
        ("gpu:a100:2(S:0,1),gpu:v100:1", {"a100": 2, "v100": 1}),
        ("gpu:2,shard:8,mps:100", {"": 2}),
        ("gpu:a100:0(IDX:N/A)", {"a100": 0}),
    ],
)
def test_parse_gres(text, gpus):
    assert parse_gres(text) == gpus


def test_parse_sinfo_slac_like():
    cap = parse_sinfo((DATA / "sinfo_slac_like.txt").read_text())
    assert cap.default_partition == "milano"
    milano = cap.partitions["milano"]
    # drained and down nodes offer nothing; their CPUs still count in the total
    assert (milano.idle_cpus, milano.total_cpus, milano.nodes, milano.nodes_usable) == (
        156,
        512,
        4,
        2,
    )
    ampere = cap.partitions["ampere"]
    assert ampere.gpus_idle("a100") == 1 + 0 + 4  # the drained node's 3 free GPUs are not offered
    assert ampere.gpus_total("a100") == 16
    assert ampere.idle_cpus == 64 + 0 + 128 + 0
    turing = cap.partitions["turing"]
    assert turing.gpus_idle("geforce_rtx_2080_ti") == 8 and turing.gpus_idle() == 8
    # a node in two partitions counts in both
    assert cap.partitions["shared"].idle_cpus == 64 + 28


@pytest.mark.parametrize(
    "text",
    ["node|cpu|idle|4/0/0|(null)|gpu:0|", "node|cpu|idle|x/y/z/w|(null)|gpu:0|", "just text"],
)
def test_parse_sinfo_refuses_unexpected_output(text):
    with pytest.raises(CapacityParseError):
        parse_sinfo(text)


def recorded_ads() -> list[dict]:
    ads = classad2.parseAds((DATA / "condor_startd_ads.txt").read_text())
    return [{k: ad.eval(k) for k in capacity.CONDOR_PROJECTION if k in ad} for ad in ads]


def test_parse_condor_slots_bnl_like():
    cap = parse_condor_slots(recorded_ads())
    pool = cap.partitions["pool"]
    # unclaimed partitionable remainders; the claimed dynamic slot and the desktop owner's slot are busy
    assert pool.idle_cpus == 40 + 16 + 8 + 80
    assert pool.total_cpus == 64 + 24 + 32 + 16 + 80 + 4
    assert (
        pool.gpus_idle("NVIDIA A100-SXM4-40GB") == 1
        and pool.gpus_total("NVIDIA A100-SXM4-40GB") == 4
    )
    assert pool.gpus_idle("Tesla T4") == 2
    assert cap.partitions["pool/aarch64"].idle_cpus == 80
    assert cap.partitions["pool/X86_64"].idle_cpus == 40 + 16 + 8


async def test_query_condor_through_the_collector_boundary(monkeypatch):
    seen = []

    def fake_collector_ads(pool, timeout):  # the one boundary: the collector's answer
        seen.append(pool)
        return recorded_ads()

    monkeypatch.setattr(capacity, "collector_ads", fake_collector_ads)
    cap = await capacity.query_condor("collector.af.example.org:9618", timeout=5)
    assert seen == ["collector.af.example.org:9618"]
    assert cap.partitions["pool"].gpus_idle("Tesla T4") == 2


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({}, "28 of 128 CPUs idle"),
        ({"gpu_count": 1, "gpu_type": "a100"}, "3 of 4 a100 GPUs idle, 28 of 128 CPUs idle"),
        ({"gpu_count": 1}, "3 of 4 GPUs idle, 28 of 128 CPUs idle"),
        ({"gpu_count": 1, "gpu_type": "t4"}, "0 of 0 t4 GPUs idle, 28 of 128 CPUs idle"),
    ],
)
def test_describe(kwargs, text):
    p = PartitionCapacity(
        "x", idle_cpus=28, total_cpus=128, idle_gpus={"a100": 3}, total_gpus={"a100": 4}
    )
    assert describe(p, **kwargs) == text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


CAP = Capacity({"cpu": PartitionCapacity("cpu", 3, 4)}, "cpu")


async def test_cache_never_waits_for_the_scheduler_and_marks_stale():
    clock = Clock()
    release = asyncio.Event()
    calls = 0

    async def slow_query():
        nonlocal calls
        calls += 1
        await release.wait()
        return CAP

    cache = CapacityCache(slow_query, interval=60, stale_after=120, timeout=30, clock=clock)
    first = cache.snapshot()  # starts the background read, returns at once
    assert (first.capacity, first.age, first.stale) == (None, None, True)
    await asyncio.sleep(0.01)
    assert calls == 1 and cache.snapshot().capacity is None  # still reading: the page is not held
    release.set()
    await asyncio.sleep(0.01)
    snap = cache.snapshot()
    assert snap.capacity is CAP and snap.age == 0 and not snap.stale
    clock.now += 121
    assert cache.snapshot().stale and cache.snapshot().capacity is CAP
    cache.stop()


async def test_cache_keeps_last_figures_when_the_scheduler_fails_or_hangs():
    clock = Clock()
    answers = [CAP, RuntimeError("sinfo exited with 1"), None]

    async def query():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        if a is None:
            await asyncio.sleep(10)  # hangs past the timeout
        return a

    cache = CapacityCache(query, interval=60, stale_after=120, timeout=0.05, clock=clock)
    cache.ensure_running = lambda: None  # this test drives refresh() itself
    await cache.refresh()
    clock.now += 200
    await cache.refresh()
    snap = cache.snapshot()
    assert snap.capacity is CAP and snap.stale and snap.error == "sinfo exited with 1"
    await cache.refresh()  # times out
    snap = cache.snapshot()
    assert snap.capacity is CAP and snap.stale and snap.error == "TimeoutError"


# ---- on the spawn page ------------------------------------------------------------------------


async def test_spawn_page_shows_capacity_per_profile_and_marks_it_stale(monkeypatch):
    """The shipped Slurm example (milano CPU, ampere A100 profiles) over the SLAC-like figures."""
    from test_batch_translate import _spawner

    sp = _spawner("SlurmProfileSpawner", "slurm")
    clock = Clock()
    sinfo = (DATA / "sinfo_slac_like.txt").read_text()

    async def query():
        return parse_sinfo(sinfo)

    cache = CapacityCache(query, interval=30, stale_after=120, clock=clock)
    cache.ensure_running = lambda: None
    monkeypatch.setattr(sp, "afhub_capacity_cache", lambda: cache)
    page = sp.afhub_render_form()
    assert "Idle capacity: being read from the scheduler" in page  # nothing read yet: no wait
    await cache.refresh()
    page = sp.afhub_render_form()
    assert "Now in milano: 156 of 512 CPUs idle</p>" in page
    assert "Now in ampere: 5 of 16 a100 GPUs idle, 192 of 512 CPUs idle</p>" in page
    assert "afhub-note afhub-note-stale" not in page
    clock.now += 300
    page = sp.afhub_render_form()
    assert "Now in milano: 156 of 512 CPUs idle (as of 5 min ago; may be out of date)" in page
    assert 'class="afhub-note afhub-note-stale"' in page


async def test_spawn_page_says_when_the_scheduler_does_not_answer(monkeypatch):
    from test_batch_translate import _spawner

    sp = _spawner("SlurmProfileSpawner", "slurm")

    async def query():
        raise RuntimeError("sinfo: error: Unable to contact slurm controller")

    cache = CapacityCache(query, clock=Clock())
    cache.ensure_running = lambda: None
    await cache.refresh()
    monkeypatch.setattr(sp, "afhub_capacity_cache", lambda: cache)
    page = sp.afhub_render_form()
    assert page.count("Idle capacity: Slurm is not answering") == 2  # both profiles
    assert "controller" not in page  # scheduler messages go to the hub log, not the page


def test_capacity_line_can_be_turned_off():
    from test_batch_translate import _spawner

    sp = _spawner("SlurmProfileSpawner", "slurm", capacity_enabled=False)
    assert 'class="afhub-note' not in sp.afhub_render_form()
