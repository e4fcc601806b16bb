"""One task per chunk: a dask graph optimization for dask-awkward analyses (coffea) on afhub's
clusters.

A coffea processor in dask mode makes some twenty tasks for every chunk of events: the read
(``from-uproot``), every selection, mask and histogram fill, and the per-chunk parts of the
sums. Distributed runs each one as its own task: the scheduler's decision, the worker's state
machine, a message each way, and the task's inputs deserialized for it alone. On the AGC ttbar
processor (``bench/analysis.py``) that bookkeeping cost the workers' task threads 30% more CPU
than the same graph in one process, and their event loops, the scheduler and the client as much
again, on the same cores.

:func:`fuse_chunks` rewrites the graph so that every task that depends on exactly one chunk's
read (and on nothing else of the graph's inputs but constants) runs inside one task for that
chunk: it computes them in order, drops each intermediate once its last user in the chunk has
run (memory as in one process), and returns the values the rest of the graph needs (the
partial histograms and sums). The tasks that combine chunks read those values out of it.
The results are the same objects computed by the same functions; only the bookkeeping goes.

Scope, on purpose narrow: only graphs with a dask-awkward input layer (``AwkwardInputLayer``,
what ``uproot.dask`` and coffea's NanoEvents make) and no annotations (retries, resources,
priorities live on layers and would be lost); any other graph (dask.array, dataframes,
delayed) is returned unchanged. The fused tasks are named ``chunk-<read's name>``, so the
dashboard's task stream and progress show one bar per chunk.

Enabled in a kernel by :func:`install` (``afhub.server_ext.dask.new_cluster`` and
``connect`` call it): dask's ``optimizations`` setting runs it after the collections' own
optimizations (dask-awkward's column projection first). ``dask.config.set({"afhub.fuse-chunks":
False})`` switches it off.
"""

from __future__ import annotations

from operator import getitem

CONFIG_KEY = "afhub.fuse-chunks"
PREFIX = "chunk-"


def _run_chunk(tasks, order, exports, frees, external_keys, *external_values):
    """Run one chunk's tasks in ``order`` on the values of their ``external_keys``; after each
    task drop the values it used last (``frees``); return the ``exports``' values."""
    values = dict(zip(external_keys, external_values, strict=True))
    for key in order:
        values[key] = tasks[key](values)
        for done in frees.get(key, ()):
            del values[done]
    return tuple(values[k] for k in exports)


def _awkward_input_layers(dsk) -> set[str] | None:
    """The names of ``dsk``'s dask-awkward input layers; None when it is not a graph this
    optimization takes (not a HighLevelGraph, an annotated layer, no such layer, no
    dask-awkward)."""
    import sys

    layers = sys.modules.get("dask_awkward.layers")  # not imported: no dask-awkward graph
    if layers is None:
        return None
    AwkwardInputLayer = layers.AwkwardInputLayer  # noqa: N806
    from dask.highlevelgraph import HighLevelGraph

    if not isinstance(dsk, HighLevelGraph):
        return None
    if any(layer.annotations for layer in dsk.layers.values()):
        return None
    names = {n for n, layer in dsk.layers.items() if isinstance(layer, AwkwardInputLayer)}
    return names or None


def _name(key) -> str:
    return key[0] if isinstance(key, tuple) else str(key)


_MANY = object()  # a task depending on more than one chunk's read


def chunk_groups(deps: dict, reads: set) -> dict:
    """``{read key: [its chunk's keys in execution order]}``: the keys that depend on exactly
    one of the ``reads`` (the read itself first). ``deps``: ``{key: dependencies}`` within the
    graph. Pure logic."""
    from dask.core import toposort

    order = toposort(deps, dependencies=deps)
    seed: dict = {}
    for k in order:
        if k in reads:
            seed[k] = k
            continue
        s = None
        for d in deps[k]:
            sd = seed[d]
            if sd is None:
                continue
            if s is None:
                s = sd
            elif sd is not s and sd != s:
                s = _MANY
                break
        seed[k] = s
    groups: dict = {}
    for k in order:
        s = seed[k]
        if s is not None and s is not _MANY:
            groups.setdefault(s, []).append(k)
    return groups


def fuse_chunks(dsk, keys, **kwargs):
    """The optimization (dask's ``optimizations`` signature): ``dsk`` with every chunk's tasks
    fused into one, or ``dsk`` itself when it is not a dask-awkward graph (module docstring)."""
    import dask
    from dask._task_spec import Task, TaskRef, convert_legacy_graph
    from dask.core import flatten, reverse_dict
    from dask.utils import ensure_dict

    if not dask.config.get(CONFIG_KEY, True):
        return dsk
    input_layers = _awkward_input_layers(dsk)
    if not input_layers:
        return dsk
    graph = convert_legacy_graph(ensure_dict(dsk))
    deps = {k: {d for d in node.dependencies if d in graph} for k, node in graph.items()}
    reads = {k for k in graph if _name(k) in input_layers and not deps[k]}
    groups = {s: ks for s, ks in chunk_groups(deps, reads).items() if len(ks) > 1}
    if not groups:
        return dsk
    wanted = set(flatten(keys))
    users = reverse_dict(deps)

    out = dict(graph)
    subs: dict = {}  # an exported key -> the node reading it out of its chunk's task
    for read, members in groups.items():
        inside = set(members)
        exports = tuple(k for k in members if k in wanted or any(u not in inside for u in users[k]))
        # what the chunk's tasks read from outside it, futures' keys outside the graph included
        needed = {d for k in members for d in graph[k].dependencies}
        external = tuple(sorted(needed - inside, key=str))
        position = {k: i for i, k in enumerate(members)}
        frees: dict = {}
        for k in members:
            if k in exports:
                continue
            used_by = [u for u in users[k] if u in inside]
            last = max(used_by, key=position.__getitem__) if used_by else k
            frees.setdefault(last, []).append(k)
        fused = (PREFIX + read[0], *read[1:]) if isinstance(read, tuple) else PREFIX + read
        out[fused] = Task(
            fused,
            _run_chunk,
            {k: graph[k] for k in members},
            tuple(members),
            exports,
            {k: tuple(v) for k, v in frees.items()},
            external,
            *(TaskRef(d) for d in external),
            _data_producer=any(graph[k].data_producer for k in members),
        )
        for k in members:
            del out[k]
        for i, k in enumerate(exports):
            subs[k] = Task(None, getitem, TaskRef(fused), i)
            if k in wanted:
                out[k] = Task(k, getitem, TaskRef(fused), i)
    for k, node in list(out.items()):
        hit = {d: subs[d] for d in node.dependencies if d in subs}
        if hit and k not in subs:
            out[k] = node.substitute(hit)
    return out


def install() -> None:
    """Run :func:`fuse_chunks` in this process's dask computations (once)."""
    import dask

    current = tuple(dask.config.get("optimizations", ()))
    if fuse_chunks not in current:
        dask.config.set({"optimizations": (*current, fuse_chunks)})


__all__ = ["CONFIG_KEY", "chunk_groups", "fuse_chunks", "install"]
