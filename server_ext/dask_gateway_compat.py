"""The stock dask-gateway client must never block its own event loop when it is closed.

``dask_gateway.Gateway`` and ``GatewayCluster`` close themselves in ``__del__``, and ``close()``
runs the cleanup on the client's event loop and *waits* for it. With distributed 2025.3 (the
release dask-awkward allows; images/analysis/requirements.in) every client in a process shares
one loop thread, so an object the garbage collector finalizes *on that thread* (a ``Gateway``
left over from ``gw.connect(name)`` that failed, collected during the next request) waits for
the loop it is running on: the process hangs for good, every later Dask call with it. Seen in
tests/test_dask_integration.py (bob's kernel after a refused ``connect``) and in the user
server, whose token sync drops the clients of stopped clusters (``dask_service.py``): its loop
stuck, no token reached later clusters made with the stock ``Gateway()``, whose workers then
waited out the scheduler's 30 s token gate (``dask_token_gate.py``; bench/dask_cluster.py).

:func:`patch` makes ``close()`` on a background event-loop thread run the stock ``close()`` in a
thread of its own instead of waiting; from the main thread or a plain thread it is unchanged.
The same finalizer on a loop thread that is still *starting* waited for ``LoopRunner``'s lock,
which the thread starting it holds until the loop runs: that start failed after 10 s (bob's
kernel listing his clusters after a refused ``new_cluster``). Kernels of afhub's server
environment apply it when ``dask_gateway.client`` is imported (:func:`load_ipython_extension`,
enabled with ``xrootd_sessions`` in ``etc/ipython/ipython_kernel_config.json``), without
importing dask_gateway themselves. Every ``Gateway`` afhub makes comes from
``dask_client.gateway()``, which applies it first: the user server (token sync, sidebar
routes), the widget and ``new_cluster``/``connect`` from any kernel. Dask workers never close a
gateway client.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import threading

MODULE = "dask_gateway.client"


def _on_a_loop_thread() -> bool:
    """Whether this thread is a background event-loop thread (distributed's shared "IO loop",
    or one being started): the only place the collector may finalize a client whose ``close()``
    then waits for a loop or for ``LoopRunner``'s lock that this thread's own progress frees.
    The main thread's loop (a kernel's, the server's) runs user code that expects ``close()`` to
    have finished when it returns, and never blocks those: it keeps the stock ``close()``."""
    if threading.current_thread() is threading.main_thread():
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_background(fn, *args) -> None:
    threading.Thread(target=fn, args=args, name="afhub-gateway-close", daemon=True).start()


def patch(client) -> None:
    """Make ``client.Gateway.close`` and ``client.GatewayCluster.close`` safe on a background
    loop thread (``client``: the ``dask_gateway.client`` module): there they run the stock
    ``close()`` in a thread of their own instead of waiting. Idempotent."""
    gateway_close = client.Gateway.close
    if getattr(gateway_close, "afhub_safe", False):
        return
    cluster_close = client.GatewayCluster.close

    def close_gateway(self):
        # once is enough: the stock close() run again (by __del__ after an explicit close or a
        # ``with`` block) asks a stopped loop runner for its loop, and raises
        if getattr(self, "_afhub_closed", False):
            return None
        if getattr(self, "asynchronous", True) or not _on_a_loop_thread():
            out = gateway_close(self)
        else:
            _in_background(gateway_close, self)
            out = None
        self._afhub_closed = True
        return out

    def close_cluster(self, shutdown=None):
        if getattr(self, "asynchronous", True) or not _on_a_loop_thread():
            return cluster_close(self, shutdown=shutdown)
        if self.status == "closed":
            return None
        _in_background(cluster_close, self, shutdown)
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
