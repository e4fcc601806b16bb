"""Workers stop re-scanning what they imported: ``gc.freeze()`` once their first task is done.

Python's cyclic garbage collector walks every tracked object of the oldest generation at each
full collection. A worker running a coffea analysis holds hundreds of thousands of them once its
first task has imported awkward, uproot, coffea, numba and their schemas, none of which ever
becomes garbage; the workers then spent 10-15% of their time in the collector (measured with
``bench/analysis.py``'s processor; turning the collector off saved the same). Freezing moves
the objects alive at that moment out of the collector's sight; reference counting still frees
every one of them that is dropped, only a reference cycle among them would stay (the imports'
own objects, which live as long as the worker anyway).

:class:`FreezeAfterFirstTask` is a distributed ``WorkerPlugin``;
the gateway's preload (``dask_preload``) adds it to every worker.
"""

from __future__ import annotations

import gc

from distributed.diagnostics.plugin import WorkerPlugin


class FreezeAfterFirstTask(WorkerPlugin):
    """``gc.freeze()`` once, when the worker's first task has finished (executing -> memory)."""

    name = "afhub-gc-freeze"

    def __init__(self) -> None:
        self.frozen = False

    def transition(self, key, start: str, finish: str, **kwargs) -> None:
        if not self.frozen and start == "executing" and finish == "memory":
            self.frozen = True
            gc.freeze()


__all__ = ["FreezeAfterFirstTask"]
