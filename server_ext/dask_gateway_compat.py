"""The stock dask-gateway client must never block its own event loop when it is closed.

``dask_gateway.Gateway`` and ``GatewayCluster`` close themselves in ``__del__``, and ``close()``
runs the cleanup on the client's event loop and *waits* for it. With distributed 2025.3 (the
release dask-awkward allows; images/analysis/requirements.in) every client in a process shares
one loop thread, so an object the garbage collector finalizes *on that thread* (a ``Gateway``
left over from ``gw.connect(name)`` that failed, collected during the next request) waits for
the loop it is running on: the kernel hangs for good, every later Dask call with it. Seen in
tests/test_dask_integration.py (bob's kernel after a refused ``connect``).

:func:`patch` makes ``close()`` on the loop's own thread schedule the cleanup on that loop
instead of waiting for it; from any other thread it is unchanged. Kernels of afhub's server
environment apply it when ``dask_gateway.client`` is imported (:func:`load_ipython_extension`,
enabled with ``xrootd_sessions`` in ``etc/ipython/ipython_kernel_config.json``), without
importing dask_gateway themselves; Dask workers never close a gateway client.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys

MODULE = "dask_gateway.client"


def _on_this_loop(loop) -> bool:
    """Whether this thread is running ``loop`` (an asyncio loop) right now."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _own_loop(obj):
    """The asyncio loop ``obj`` (a ``Gateway`` or ``GatewayCluster``) would wait on, when this
    thread is running it, else None."""
    if getattr(obj, "asynchronous", True):
        return None
    try:
        loop = obj.loop.asyncio_loop
    except Exception:
        return None
    return loop if loop.is_running() and _on_this_loop(loop) else None


def patch(client) -> None:
    """Make ``client.Gateway.close`` and ``client.GatewayCluster.close`` safe on their own loop's
    thread (``client``: the ``dask_gateway.client`` module). Idempotent."""
    gateway_close = client.Gateway.close
    if getattr(gateway_close, "afhub_safe", False):
        return
    cluster_close = client.GatewayCluster.close

    def close_gateway(self):
        loop = _own_loop(self)
        if loop is None:
            return gateway_close(self)
        loop.create_task(self._cleanup())  # the session closes once this callback returns
        return None

    def close_cluster(self, shutdown=None):
        loop = _own_loop(self)
        if loop is None:
            return cluster_close(self, shutdown=shutdown)
        if self.status == "closed":
            return None

        async def stop():
            await self._stop_internal(shutdown=shutdown)
            await self.gateway._cleanup()

        loop.create_task(stop())
        return None

    for new, old in ((close_gateway, gateway_close), (close_cluster, cluster_close)):
        new.__doc__, new.__name__, new.afhub_safe = old.__doc__, old.__name__, True
    client.Gateway.close = close_gateway
    client.GatewayCluster.close = close_cluster


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies :func:`patch` right after ``dask_gateway.client`` is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name != MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def exec_and_patch(module, exec_module=exec_module):
                    exec_module(module)
                    patch(module)

                spec.loader.exec_module = exec_and_patch
                return spec
        return None


def install() -> None:
    """Patch ``dask_gateway.client`` now if it is imported, else when it is."""
    if MODULE in sys.modules:
        patch(sys.modules[MODULE])
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def load_ipython_extension(ipython) -> None:  # pragma: no cover - run by IPython
    install()
