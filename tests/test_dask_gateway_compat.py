"""``server_ext/dask_gateway_compat``: the stock dask-gateway client closed on its own event
loop's thread (what the garbage collector does with a ``Gateway`` left over from a failed
``gw.connect``) must not wait for itself. Each case runs in its own interpreter: an unpatched
client deadlocks its loop thread for good, which is the control that shows the check can fail.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, sys
{before}
from dask_gateway import Gateway
{after}
gw = Gateway(address="http://127.0.0.1:9", auth="basic")

async def close_on_the_loop_thread():
    gw.close()  # what __del__ does when the collector runs on this thread
    return "closed"

future = asyncio.run_coroutine_threadsafe(close_on_the_loop_thread(), gw.loop.asyncio_loop)
try:
    print(future.result(timeout=10))
except TimeoutError:
    print("hung")
sys.stdout.flush()
import os; os._exit(0)
"""
INSTALL = "from afhub.server_ext import dask_gateway_compat; dask_gateway_compat.install()"


def run(before: str = "", after: str = "") -> str:
    code = SCRIPT.format(before=before, after=after)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:]


def test_unpatched_client_hangs_closed_on_its_loop_thread():
    assert run() == "hung"  # the deadlock the patch exists for (lift the patch when this fails)


@pytest.mark.parametrize(
    ("before", "after"),
    [(INSTALL, ""), ("", INSTALL)],
    ids=["installed-before-import", "installed-after-import"],
)
def test_patched_client_closes_on_its_loop_thread(before, after):
    assert run(before, after) == "closed"


def test_patch_is_idempotent_and_keeps_the_api():
    import dask_gateway.client as client
    from afhub.server_ext import dask_gateway_compat

    dask_gateway_compat.patch(client)
    first = client.Gateway.close, client.GatewayCluster.close
    dask_gateway_compat.patch(client)
    assert (client.Gateway.close, client.GatewayCluster.close) == first
    assert client.Gateway.close.__name__ == "close" and client.Gateway.close.__doc__
