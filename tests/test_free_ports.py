"""``afhub up`` picks the facility's internal ports (hub, proxy API, demo IdP, XRootD origin and
cache, Dask gateway and its scheduler proxy) all distinct, and never one the values fix.

The kernel here is a stand-in (``LowestFreeKernel``): it hands ``bind((host, 0))`` the lowest
port no open socket holds, the worst a real kernel may do (a released port handed out again at
once). A CI run once got the same port for the hub and the proxy API that way.
"""

from __future__ import annotations

import socket

import pytest
import yaml
from afhub.hub_config import runner
from facility import example_values


class LowestFreeKernel:
    def __init__(self):
        self.bound: set[int] = set()
        kernel = self

        class Sock:
            def __init__(self, *a, **kw):
                self.port = None

            def bind(self, addr):
                host, port = addr
                if port == 0:
                    port = next(p for p in range(40000, 41000) if p not in kernel.bound)
                if port in kernel.bound:
                    raise OSError(98, "Address already in use")
                kernel.bound.add(port)
                self.port = port

            def getsockname(self):
                return ("127.0.0.1", self.port)

            def close(self):
                kernel.bound.discard(self.port)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.close()

        self.socket = Sock


def internal_ports(merged: dict) -> dict[str, int]:
    return {
        "hub": merged["hub"]["hub_port"],
        "proxy_api": merged["hub"]["proxy_api_port"],
        "idp": merged["auth"]["dev"]["port"],
        "origin": int(merged["data"]["origin"].rsplit(":", 1)[1]),
        "cache": int(merged["data"]["cache"].rsplit(":", 1)[1]),
        "gateway": merged["dask"]["port"],
        "scheduler_proxy": merged["dask"]["scheduler_port"],
    }


def prepare(tmp_path, values: dict, monkeypatch) -> tuple[dict, LowestFreeKernel]:
    kernel = LowestFreeKernel()
    monkeypatch.setattr(runner.socket, "socket", kernel.socket)
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    merged, _ = runner.Facility(str(path), str(tmp_path / "data"), port=8000).prepare()
    return merged, kernel


def test_every_picked_port_is_distinct_even_when_the_kernel_reuses_released_ones(
    tmp_path, monkeypatch
):
    merged, kernel = prepare(tmp_path, example_values("local"), monkeypatch)
    ports = internal_ports(merged)
    assert len(set(ports.values())) == len(ports), ports
    assert 8000 not in ports.values()
    assert not kernel.bound  # every held socket released before the servers start


def test_ports_fixed_by_the_values_are_kept_and_never_picked_again(tmp_path, monkeypatch):
    values = example_values("local")
    # the lowest ports the stand-in kernel would hand out first
    values.setdefault("hub", {}).update({"hub_port": 40000, "proxy_api_port": 40002})
    values.setdefault("dask", {})["port"] = 40001
    merged, _ = prepare(tmp_path, values, monkeypatch)
    ports = internal_ports(merged)
    assert (ports["hub"], ports["proxy_api"], ports["gateway"]) == (40000, 40002, 40001)
    assert len(set(ports.values())) == len(ports), ports


def test_a_kernel_that_only_offers_taken_ports_is_an_error_naming_the_host(monkeypatch):
    class Stuck:  # every bind to 0 gets the port the values fixed
        def __init__(self, *a, **kw):
            pass

        def bind(self, addr):
            pass

        def getsockname(self):
            return ("127.0.0.1", 40000)

        def close(self):
            pass

    monkeypatch.setattr(runner.socket, "socket", Stuck)
    with pytest.raises(OSError, match="127.0.0.1"), runner.FreePorts([40000]) as ports:
        ports.pick("127.0.0.1")


def test_real_sockets_give_distinct_ports():
    with runner.FreePorts() as ports:
        picked = [ports.pick() for _ in range(20)]
    assert len(set(picked)) == 20
    with socket.socket() as s:  # released: bindable again
        s.bind(("127.0.0.1", picked[0]))
