"""A kernel in a user's server of a real facility, driven over its websocket through the
hub's proxy as JupyterLab drives it (cookies of the user's logged-in session). Used by the Dask
integration tests, the sample-notebook test and ``bench/dask_cluster.py``; :func:`execute` is
the one websocket round trip every kernel test uses (also ``kernels_helpers.JupyterServer``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid


class Kernel:
    """A kernel in a user's server, driven over its websocket through the hub's proxy."""

    def __init__(self, hs):
        self.hs = hs
        r = hs.server_api("POST", "api/kernels", json={})
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]

    async def _execute(self, code: str, timeout: float) -> str:
        model = self.hs.server_model()
        url = self.hs.url(model["url"]).replace("http://", "ws://")
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.hs.session.cookies)
        return await execute(
            f"{url}api/kernels/{self.id}/channels",
            {"Cookie": cookies},
            code,
            timeout,
            username=self.hs.username,
        )

    def run(self, code: str, timeout: float = 180) -> str:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._execute(code, timeout))
        # a loop already runs in this thread (Playwright's sync API keeps one): use another
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._execute(code, timeout)).result()

    def json(self, code: str, timeout: float = 180):
        """Run ``code``, which prints one JSON line last; return it parsed."""
        return json.loads(self.run(code, timeout).strip().splitlines()[-1])


class KernelError(Exception):
    def __init__(self, ename, evalue, traceback=()):
        self.ename, self.evalue, self.traceback = ename, evalue, list(traceback)
        super().__init__(f"{ename}: {evalue}" + ("\n" + "\n".join(traceback) if traceback else ""))


async def execute(
    url: str, headers: dict, code: str, timeout: float = 60, *, username: str = "test"
) -> str:
    """Send one execute_request on the kernel websocket ``url`` (as JupyterLab does); return
    the code's stdout, raise :class:`KernelError` (with the traceback) if it raised."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(HTTPRequest(url, headers=headers))
    msg_id = uuid.uuid4().hex
    await conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": username,
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    out: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
            if raw is None:
                break
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["header"]["msg_type"]
            if kind == "stream":
                out.append(reply["content"]["text"])
            elif kind == "error":
                c = reply["content"]
                raise KernelError(c["ename"], c["evalue"], c.get("traceback", []))
            elif kind == "status" and reply["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        conn.close()
    raise TimeoutError(f"no reply on {url}: {''.join(out)}")
