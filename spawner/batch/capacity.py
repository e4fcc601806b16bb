"""Idle CPUs and GPUs per partition (Slurm) or pool (HTCondor), for the spawn page.

Four parts, kept apart:

- pure parsers: :func:`parse_sinfo` reads ``sinfo`` output (:data:`SINFO_ARGS`),
  :func:`parse_condor_slots` reads startd ClassAds (mappings) from a collector query;
  :func:`describe` turns a partition's figures into the line shown next to a profile;
- the two scheduler queries (the only I/O): :func:`query_slurm` runs ``sinfo``,
  :func:`query_condor` asks the collector through the ``htcondor`` bindings;
- :class:`CapacityCache`: one per scheduler in the hub process; the page only ever reads its
  last result (:meth:`CapacityCache.snapshot`, never awaits the scheduler), a background task
  refreshes it every ``interval`` seconds, and a result older than ``stale_after`` is marked
  as out of date. A slow or failing scheduler costs the page nothing;
- :class:`BatchCapacity`: the spawner part, the ``capacity_*`` traits and the notes next to
  each profile on the spawn page (``afhub_profile_notes``), memoised per figures and page.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable

from ..form import note_html

log = logging.getLogger("afhub.capacity")

# ---------------------------------------------------------------------------------------------
# figures


@dataclass(frozen=True)
class PartitionCapacity:
    name: str
    idle_cpus: int = 0
    total_cpus: int = 0
    idle_gpus: Mapping[str, int] = field(default_factory=dict)  # type ("" = untyped) -> idle
    total_gpus: Mapping[str, int] = field(default_factory=dict)
    nodes: int = 0
    nodes_usable: int = 0

    def gpus_idle(self, gpu_type: str | None = None) -> int:
        if gpu_type:
            return self.idle_gpus.get(gpu_type, 0)
        return sum(self.idle_gpus.values())

    def gpus_total(self, gpu_type: str | None = None) -> int:
        if gpu_type:
            return self.total_gpus.get(gpu_type, 0)
        return sum(self.total_gpus.values())


@dataclass(frozen=True)
class Capacity:
    partitions: Mapping[str, PartitionCapacity]
    default_partition: str | None = None


class CapacityParseError(ValueError):
    """Scheduler output that is not what the parser expects."""


# ---------------------------------------------------------------------------------------------
# Slurm

SINFO_FIELDS = ("NodeList", "Partition", "StateLong", "CPUsState", "Gres", "GresUsed")
SINFO_ARGS = [
    "sinfo",
    "--noheader",
    "--Node",
    "--Format=" + ",".join(f"{f}:256|" for f in SINFO_FIELDS),
]
# node states in which a node takes no new jobs (sinfo long names; flags such as * ~ # ! %
# and "+DRAIN" are suffixes)
UNUSABLE = (
    "down",
    "drain",
    "fail",
    "maint",
    "inval",
    "future",
    "unknown",
    "power",
    "reboot",
    "not_responding",
)
_PARENS = re.compile(r"\([^)]*\)")
_GRES = re.compile(r"^gpu(?::([^:]+))?:([0-9]+)$")


def parse_gres(text: str) -> dict[str, int]:
    """``"gpu:a100:4(S:0-1),gpu:2,shard:8"`` -> ``{"a100": 4, "": 2}`` (GPUs only)."""
    out: dict[str, int] = {}
    text = (text or "").strip()
    if text in ("", "(null)", "N/A"):
        return out
    for item in _PARENS.sub("", text).split(","):
        item = item.strip()
        m = _GRES.match(item)
        if m:
            kind = m.group(1) or ""
            out[kind] = out.get(kind, 0) + int(m.group(2))
    return out


def _usable(state: str) -> bool:
    s = state.lower()
    if s.endswith(("*", "~", "#", "!", "%", "$", "@", "^", "-")):
        return False
    return not any(word in s for word in UNUSABLE)


def parse_sinfo(text: str) -> Capacity:
    """Per-partition capacity from ``sinfo`` (:data:`SINFO_ARGS`: one row per node and partition)."""
    parts: dict[str, dict] = {}
    default = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < len(SINFO_FIELDS):
            raise CapacityParseError(
                f"sinfo line {n}: expected {len(SINFO_FIELDS)} columns: {line!r}"
            )
        _node, partition, state, cpus, gres, used = cols[: len(SINFO_FIELDS)]
        if partition.endswith("*"):
            partition = partition[:-1]
            default = partition
        try:
            alloc, idle, _other, total = (int(x) for x in cpus.split("/"))
        except ValueError:
            raise CapacityParseError(f"sinfo line {n}: CPUs {cpus!r} is not A/I/O/T") from None
        p = parts.setdefault(
            partition,
            {"idle_cpus": 0, "total_cpus": 0, "idle": {}, "total": {}, "nodes": 0, "usable": 0},
        )
        p["nodes"] += 1
        p["total_cpus"] += total
        have = parse_gres(gres)
        for kind, count in have.items():
            p["total"][kind] = p["total"].get(kind, 0) + count
        if not _usable(state):
            continue
        p["usable"] += 1
        p["idle_cpus"] += idle
        taken = parse_gres(used)
        for kind, count in have.items():
            free = max(0, count - taken.get(kind, 0))
            p["idle"][kind] = p["idle"].get(kind, 0) + free
    return Capacity(
        partitions={
            name: PartitionCapacity(
                name=name,
                idle_cpus=p["idle_cpus"],
                total_cpus=p["total_cpus"],
                idle_gpus=p["idle"],
                total_gpus=p["total"],
                nodes=p["nodes"],
                nodes_usable=p["usable"],
            )
            for name, p in parts.items()
        },
        default_partition=default,
    )


async def query_slurm(timeout: float, env: Mapping[str, str] | None = None) -> Capacity:
    """Run ``sinfo`` (at most ``timeout`` seconds) and parse it."""
    proc = await asyncio.create_subprocess_exec(
        *SINFO_ARGS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"sinfo did not answer in {timeout:g}s") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"sinfo exited with {proc.returncode}: {err.decode(errors='replace').strip()[:300]}"
        )
    return parse_sinfo(out.decode(errors="replace"))


# ---------------------------------------------------------------------------------------------
# HTCondor

CONDOR_PROJECTION = ["Name", "State", "Activity", "Cpus", "GPUs", "TotalSlotCpus", "TotalSlotGPUs", "GPUs_DeviceName", "CUDADeviceName", "PartitionableSlot", "Arch", "Machine"]  # fmt: skip
POOL = "pool"  # HTCondor has no partitions: one entry for the whole pool, one per Arch


def parse_condor_slots(ads: Iterable[Mapping]) -> Capacity:
    """Idle capacity from startd ads: partitionable slots' unclaimed ``Cpus``/``GPUs`` plus
    static slots that are ``Unclaimed``; entries ``pool`` and ``pool/<Arch>``."""
    parts: dict[str, dict] = {}

    def add(name, idle_cpus, total_cpus, gpu_type, idle_gpus, total_gpus, usable):
        p = parts.setdefault(
            name,
            {"idle_cpus": 0, "total_cpus": 0, "idle": {}, "total": {}, "nodes": 0, "usable": 0},
        )
        p["nodes"] += 1
        p["usable"] += usable
        p["idle_cpus"] += idle_cpus
        p["total_cpus"] += total_cpus
        if total_gpus:
            p["total"][gpu_type] = p["total"].get(gpu_type, 0) + total_gpus
            p["idle"][gpu_type] = p["idle"].get(gpu_type, 0) + idle_gpus

    for ad in ads:
        try:
            cpus = int(ad.get("Cpus", 0) or 0)
            gpus = int(ad.get("GPUs", 0) or 0)
        except (TypeError, ValueError):
            raise CapacityParseError(
                f"slot {ad.get('Name')!r}: Cpus/GPUs are not numbers"
            ) from None
        partitionable = bool(ad.get("PartitionableSlot", False))
        if partitionable:
            total_cpus = int(ad.get("TotalSlotCpus", cpus) or cpus)
            total_gpus = int(ad.get("TotalSlotGPUs", gpus) or gpus)
            idle = True
        else:
            total_cpus, total_gpus = cpus, gpus
            idle = ad.get("State") == "Unclaimed"
        owner = ad.get("State") == "Owner"
        device = str(ad.get("GPUs_DeviceName") or ad.get("CUDADeviceName") or "")
        idle_cpus = cpus if idle and not owner else 0
        idle_gpus = gpus if idle and not owner else 0
        arch = str(ad.get("Arch") or "")
        for name in (POOL, f"{POOL}/{arch}" if arch else None):
            if name:
                add(name, idle_cpus, total_cpus, device, idle_gpus, total_gpus, 0 if owner else 1)
    return Capacity(
        partitions={
            name: PartitionCapacity(
                name,
                p["idle_cpus"],
                p["total_cpus"],
                p["idle"],
                p["total"],
                p["nodes"],
                p["usable"],
            )
            for name, p in parts.items()
        },
        default_partition=POOL,
    )


def collector_ads(pool: str | None, timeout: float) -> list[dict]:
    """The one boundary to HTCondor: startd ads from the collector (blocking; run in a thread)."""
    import htcondor2

    collector = htcondor2.Collector(pool) if pool else htcondor2.Collector()
    ads = collector.query(htcondor2.AdType.Startd, projection=CONDOR_PROJECTION)
    return [{k: ad.eval(k) if k in ad else None for k in CONDOR_PROJECTION} for ad in ads]


async def query_condor(pool: str | None, timeout: float) -> Capacity:
    ads = await asyncio.wait_for(asyncio.to_thread(collector_ads, pool, timeout), timeout)
    return parse_condor_slots(ads)


# ---------------------------------------------------------------------------------------------
# what the page shows


def describe(
    p: PartitionCapacity | None, *, gpu_count: int = 0, gpu_type: str | None = None
) -> str:
    """``"12 of 64 CPUs idle"`` / ``"1 of 4 a100 GPUs idle, 30 of 64 CPUs idle"``."""
    if p is None:
        return ""
    cpus = f"{p.idle_cpus} of {p.total_cpus} CPUs idle"
    if gpu_count:
        kind = f" {gpu_type}" if gpu_type else ""
        gpus = f"{p.gpus_idle(gpu_type)} of {p.gpus_total(gpu_type)}{kind} GPUs idle"
        return f"{gpus}, {cpus}"
    return cpus


# ---------------------------------------------------------------------------------------------
# the cache


@dataclass(frozen=True)
class Snapshot:
    capacity: Capacity | None
    age: float | None  # seconds since the figures were read; None before the first read
    stale: bool
    error: str | None = None
    read_at: float | None = None  # clock time of the read: identifies these figures


class CapacityCache:
    """The last capacity a scheduler reported, refreshed in the background."""

    def __init__(
        self,
        query: Callable[[], Awaitable[Capacity]],
        *,
        interval: float = 30,
        stale_after: float = 120,
        timeout: float = 10,
        clock: Callable[[], float] = time.monotonic,
        label: str = "scheduler",
    ):
        self.query, self.interval, self.stale_after, self.timeout = (
            query,
            interval,
            stale_after,
            timeout,
        )
        self.clock, self.label = clock, label
        self._value: Capacity | None = None
        self._at: float | None = None
        self._error: str | None = None
        self._task: asyncio.Task | None = None

    def snapshot(self) -> Snapshot:
        """The last figures; starts the background refresh if it is not running. Never waits."""
        self.ensure_running()
        age = None if self._at is None else self.clock() - self._at
        stale = age is None or age > self.stale_after
        return Snapshot(self._value, age, stale, self._error, self._at)

    def ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (pure tests): refresh() is called explicitly
        self._task = loop.create_task(self._run())

    async def refresh(self) -> None:
        try:
            value = await asyncio.wait_for(self.query(), self.timeout)
        except Exception as e:  # a slow or broken scheduler only makes the figures stale
            message = str(e) or type(e).__name__
            if message != self._error:
                log.warning("Capacity from %s unavailable: %s", self.label, message)
            self._error = message
            return
        self._value, self._at, self._error = value, self.clock(), None

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


# ---- on the spawn page -------------------------------------------------------------------


class BatchCapacity(LoggingConfigurable):
    """Idle capacity next to each profile on the spawn page (placed before ProfileSpawnerMixin:
    its ``afhub_profile_notes`` is the hook the mixin's page calls). Each scheduler's class
    gives ``afhub_capacity_cache`` and ``afhub_capacity_key`` (:mod:`.slurm`, :mod:`.htcondor`).
    """

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
