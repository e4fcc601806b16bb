"""Server-side render time of a 200-profile spawn page, against KubeSpawner's own form.

Both render the same profile list in this process: afhub (group filtering + display model +
template, what ``ProfileSpawnerMixin.options_form`` does per request) and KubeSpawner's
``_render_options_form`` (its bundled ``form.html``, no group filtering). Prints the median
time of each and the ratio afhub / KubeSpawner (below 1 means afhub is faster).

    python bench/spawn_page.py [--profiles 200] [--repeat 30] [--smoke]

``--smoke`` (``tests/test_bench_smoke.py``): 10 profiles, 2 repeats, the same path.

Measured 2026-11-22 (a `pip install .` venv, 2 shared cores under load, three runs, median):
first load 0.83 (runs 0.94, 0.78, 0.83), repeat loads 0.62 (0.54, 0.62, 0.83). Goals: first
load <= 1.0, repeat <= 0.7. What it took (profiled first): no deep copy of the profiles, option
fields rendered in Python instead of Jinja loops, a cache of escaped strings (emptied before
each first-load sample), summary parts as data attributes instead of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time


def make_catalogue(n: int):
    images = [
        {
            "name": f"img{i}",
            "image": f"registry.example.org/af/img{i}:1.0",
            "archs": ["x86_64", "aarch64"] if i % 2 else ["x86_64"],
            "gpu": i % 3 == 0,
        }
        for i in range(10)
    ]
    profiles = []
    for i in range(n):
        gpu = i % 4 == 0
        profiles.append(
            {
                "display_name": f"Profile {i}: {'GPU' if gpu else 'CPU'} session",
                "slug": f"p{i}",
                "description": f"Description of profile {i}, a line of text shown under the name.",
                "allowed_groups": ["gpu-users"] if gpu else [],
                "image": f"img{(i * 3) % 10 if not gpu else 0}",
                "resources": {
                    "cpu": 2 + i % 4,
                    "memory": f"{4 + i % 8}Gi",
                    **({"gpu": {"count": 1, "type": "a100"}} if gpu else {}),
                },
                "kubespawner_override": {"extra_labels": {"profile": f"p{i}"}},
                "profile_options": {
                    "size": {
                        "display_name": "Size",
                        "choices": {
                            f"s{j}": {
                                "display_name": f"{2**j} cores",
                                "resources": {"cpu": 2**j},
                                "kubespawner_override": {"cpu_limit": 2**j},
                            }
                            for j in range(4)
                        },
                    },
                    "image": {
                        "display_name": "Image",
                        "choices": {
                            f"i{j}": {
                                "display_name": f"Image {j}",
                                "image": f"img{j}" if not gpu else "img0",
                                "kubespawner_override": {
                                    "image": f"registry.example.org/af/img{j}:1.0"
                                },
                            }
                            for j in (range(0, 10, 3) if not gpu else [0])
                        },
                        "unlisted_choice": {
                            "enabled": True,
                            "display_name": "Custom image",
                            "validation_regex": ".+:.+",
                            "kubespawner_override": {"image": "{value}"},
                        },
                    },
                },
            }
        )
    return images, profiles


def kubespawner_profile_list(profiles):
    """The same list as KubeSpawner ``profile_list`` (afhub-only keys dropped)."""
    out = []
    for p in profiles:
        q = {
            k: v
            for k, v in p.items()
            if k in ("display_name", "slug", "description", "default", "kubespawner_override")
        }
        q["profile_options"] = {}
        for name, opt in p["profile_options"].items():
            q["profile_options"][name] = {
                "display_name": opt["display_name"],
                "choices": {
                    s: {
                        k: v
                        for k, v in c.items()
                        if k in ("display_name", "default", "kubespawner_override")
                    }
                    for s, c in opt["choices"].items()
                },
                **({"unlisted_choice": opt["unlisted_choice"]} if "unlisted_choice" in opt else {}),
            }
        out.append(q)
    return out


def medians_ms(fns, repeat: int) -> list[float]:
    """Median of each function, run interleaved (a, b, c, a, b, c, ...) so that load from other
    processes on the machine falls on all of them alike."""
    for fn in fns:
        fn()  # warm (template compilation, imports)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [statistics.median(t) * 1000 for t in times]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--smoke", action="store_true", help="10 profiles; figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.profiles, args.repeat = 10, 2

    kubeconfig_dir = tempfile.mkdtemp(prefix="afhub-bench-page-")
    try:
        await measure(args, os.path.join(kubeconfig_dir, "config"))
    finally:
        shutil.rmtree(kubeconfig_dir, ignore_errors=True)


async def measure(args, kubeconfig: str) -> None:
    with open(kubeconfig, "w") as f:
        f.write(
            "apiVersion: v1\nkind: Config\nclusters: [{name: n, cluster: {server: 'https://127.0.0.1:1'}}]\n"
            "users: [{name: n, user: {token: x}}]\ncontexts: [{name: n, context: {cluster: n, user: n}}]\ncurrent-context: n\n"
        )
    os.environ["KUBECONFIG"] = kubeconfig

    from afhub.spawner import form
    from afhub.spawner.profiles import Catalogue
    from kubespawner import KubeSpawner

    images, profiles = make_catalogue(args.profiles)
    profile_list = kubespawner_profile_list(profiles)
    groups = ["physicists", "gpu-users"]

    def afhub_page_cold():
        # first page of a spawner: catalogue built from config, then filtered and rendered;
        # the process-wide cache of escaped strings is emptied too (the hub's first page)
        form._e.cache_clear()
        views = Catalogue(images, profiles).visible(groups)
        return form.render(form.form_model(views, selected={}))

    catalogue = Catalogue(images, profiles)

    def afhub_page():
        # later pages: the spawner keeps its catalogue (and its per-groups filtering)
        views = catalogue.visible(groups)
        return form.render(form.form_model(views, selected={}))

    ks = KubeSpawner(_mock=True)  # needs a running event loop, hence async main

    def kubespawner_page():
        return ks._render_options_form(profile_list)

    a_html, k_html = afhub_page(), kubespawner_page()
    a, c, k = medians_ms([afhub_page, afhub_page_cold, kubespawner_page], args.repeat)
    print(f"profiles: {args.profiles}, repeat: {args.repeat} (median of each)")
    print(f"afhub spawn page:              {a:8.2f} ms  ({len(a_html) / 1024:.0f} KiB HTML)")
    print(f"afhub spawn page, first load:  {c:8.2f} ms  (catalogue built from config)")
    print(f"KubeSpawner form.html:         {k:8.2f} ms  ({len(k_html) / 1024:.0f} KiB HTML)")
    print(f"ratio afhub / KubeSpawner: {a / k:.2f} (first load: {c / k:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
