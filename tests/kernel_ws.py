"""A kernel in a user's server of a real facility, driven over its websocket through the
hub's proxy as JupyterLab drives it (cookies of the user's logged-in session). Used by the Dask
integration tests and ``bench/dask_cluster.py``."""

from __future__ import annotations

import asyncio
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
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        model = self.hs.server_model()
        url = self.hs.url(model["url"]).replace("http://", "ws://")
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.hs.session.cookies)
        conn = await websocket_connect(
            HTTPRequest(f"{url}api/kernels/{self.id}/channels", headers={"Cookie": cookies})
        )
        msg_id = uuid.uuid4().hex
        await conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": self.hs.username,
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
                    raise KernelError(reply["content"]["ename"], reply["content"]["evalue"])
                elif kind == "status" and reply["content"]["execution_state"] == "idle":
                    return "".join(out)
        finally:
            conn.close()
        raise TimeoutError(f"kernel of {self.hs.username} did not answer: {''.join(out)}")

    def run(self, code: str, timeout: float = 180) -> str:
        return asyncio.run(self._execute(code, timeout))

    def json(self, code: str, timeout: float = 180):
        """Run ``code``, which prints one JSON line last; return it parsed."""
        return json.loads(self.run(code, timeout).strip().splitlines()[-1])


class KernelError(Exception):
    def __init__(self, ename, evalue):
        self.ename, self.evalue = ename, evalue
        super().__init__(f"{ename}: {evalue}")
