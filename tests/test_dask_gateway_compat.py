"""``server_ext/dask_gateway_compat``: the stock dask-gateway client closed on its own event
loop's thread (what the garbage collector does with a ``Gateway`` left over from a failed
``gw.connect``) must not wait for itself. Each case runs in its own interpreter: an unpatched
client deadlocks its loop thread for good, which is the control that shows the check can fail.
The user server's token sync (``DaskService``) needs no IPython extension for it: the client
it makes is safe by itself (a stuck server loop left stock clusters without the token).
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
gw = {make}

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
STOCK = 'Gateway(address="http://127.0.0.1:9", auth="basic")'


def run(before: str = "", after: str = "", make: str = STOCK) -> str:
    code = SCRIPT.format(before=before, after=after, make=make)
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


def test_user_server_gateway_closes_on_its_loop_thread():
    # the gateway client of the server's token sync, as the server makes it (no IPython)
    server = (
        "import dask; dask.config.set({'gateway.address': 'http://127.0.0.1:9', "
        "'gateway.auth.type': 'basic'})\n"
        "from afhub.server_ext.dask_service import DaskService"
    )
    assert run(server, "", make="DaskService().gateway") == "closed"


# the collector on a loop thread that is being started: LoopRunner.start() holds the class's
# lock until that thread's loop runs, and the stock close() takes the same lock
STARTING = """
import asyncio, concurrent.futures, sys
{before}
from dask_gateway import Gateway
from distributed.utils import LoopRunner
gw = Gateway(address="http://127.0.0.1:9", auth="basic")

def a_starting_loop_thread():
    async def main():
        gw.close()  # what __del__ does when the collector runs here
        return "closed"
    return asyncio.run(main())

with LoopRunner._lock, concurrent.futures.ThreadPoolExecutor(1) as pool:
    try:
        print(pool.submit(a_starting_loop_thread).result(timeout=10))
    except TimeoutError:
        print("hung")
    sys.stdout.flush()
    import os; os._exit(0)
"""


@pytest.mark.parametrize("patched", [False, True], ids=["stock", "patched"])
def test_closed_on_a_loop_thread_being_started(patched):
    code = STARTING.format(before=INSTALL if patched else "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1:] == ["closed" if patched else "hung"], r.stderr[-2000:]


def test_close_from_the_main_thread_is_the_stock_one():
    # user code (a kernel's cell, on its main thread) expects close() done when it returns
    code = (
        INSTALL + "\nfrom dask_gateway import Gateway\n"
        "gw = Gateway(address='http://127.0.0.1:9', auth='basic')\n"
        "gw.close()\n"
        "print(gw._session is None, gw._loop_runner._started)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "False"], r.stderr[-2000:]


def test_a_closed_gateway_closes_again_quietly():
    # new_cluster()/connect() close their Gateway in a with block; __del__ closes it again
    code = (
        INSTALL + "\nimport gc\nfrom dask_gateway import Gateway\n"
        "with Gateway(address='http://127.0.0.1:9', auth='basic') as gw:\n"
        "    pass\n"
        "gw.close()\n"
        "del gw; gc.collect()\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["ok"], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-2000:]


def test_patch_is_idempotent_and_keeps_the_api():
    import dask_gateway.client as client
    from afhub.server_ext import dask_gateway_compat

    dask_gateway_compat.patch(client)
    first = client.Gateway.close, client.GatewayCluster.close
    dask_gateway_compat.patch(client)
    assert (client.Gateway.close, client.GatewayCluster.close) == first
    assert client.Gateway.close.__name__ == "close" and client.Gateway.close.__doc__
