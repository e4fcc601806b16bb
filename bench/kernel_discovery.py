"""Benchmark: listing 300 environment kernels vs the stock KernelSpecManager (not a test).

Builds 300 environments in a temporary directory, each shipping a kernelspec in
share/jupyter/kernels/python3 (150 conda-style prefixes under an image prefix, 150 venvs under a
root), plus the symlink workaround users apply today: one kernels directory with 300 symlinks to
those kernelspec directories. Then, in this process, times `get_all_specs()`:

- cold: a fresh manager each time (afhub: empty cache, full scan; stock: it has no cache);
  afhub's default sources (HOME one level deep, conda locations) are scanned too;
- warm: the same manager called again (afhub: stat-only cache validation; stock: full re-read).

Prints medians and the afhub/stock ratios (< 1 means afhub is faster). The OS page cache is warm
for both. Run: `python bench/kernel_discovery.py [N]` (`--smoke`: 10 environments, few
repetitions, for `tests/test_bench_smoke.py`).

Measured 2026-11-22 (a `pip install .` venv, 2 shared cores under load, three runs, median):
cold 0.90 (runs 1.10, 0.90, 0.89), warm 0.09 (0.09, 0.09, 0.10), get_kernel_spec 0.02. Goals:
cold <= 1.0, warm <= 0.1. What it took (profiled first): listings are plain dicts, no KernelSpec
objects; a warm listing is one flat stat pass over 2-3 paths per environment; ipykernel is only
looked for when an environment ships no kernelspec; realpaths derive from the parent's.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from afhub.server_ext.kernel_discovery import EnvKernelSpecManager
from jupyter_client.kernelspec import KernelSpecManager

PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def make_envs(base: Path, n: int) -> tuple[Path, Path, Path]:
    image, root, symlinks = base / "image" / "envs", base / "home" / "envs", base / "kernels"
    for d in (image, root, symlinks):
        d.mkdir(parents=True)
    for i in range(n):
        conda = i % 2 == 0
        prefix = (image if conda else root) / f"env{i:03d}"
        if conda:
            (prefix / "conda-meta").mkdir(parents=True)
            (prefix / "conda-meta" / "history").write_text("")
        else:
            prefix.mkdir(parents=True)
            (prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
        (prefix / "bin").mkdir()
        (prefix / "bin" / "python").touch()
        (prefix / "lib" / PYVER / "site-packages").mkdir(parents=True)
        kdir = prefix / "share" / "jupyter" / "kernels" / "python3"
        kdir.mkdir(parents=True)
        spec = {
            "argv": [f"{prefix}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python (env{i:03d})",
            "language": "python",
        }
        (kdir / "kernel.json").write_text(json.dumps(spec))
        os.symlink(kdir, symlinks / f"env{i:03d}")
    return image, root, symlinks


def timed_pair(stock_fn, afhub_fn, repeat: int) -> tuple[float, float]:
    """Medians of both, interleaved (stock, afhub, stock, ...) so that load from other processes
    on the machine falls on both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((stock_fn, samples[0]), (afhub_fn, samples[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main(n: int = 300, reps: tuple[int, int] = (11, 30)) -> None:
    with tempfile.TemporaryDirectory(prefix="afhub-bench-") as tmp:
        image, root, symlinks = make_envs(Path(tmp), n)
        os.environ["HOME"] = str(Path(tmp) / "home")  # no stray user envs or kernels
        for var in (
            "MAMBA_ROOT_PREFIX",
            "CONDA_ENVS_PATH",
            "CONDA_ENVS_DIRS",
            "AFHUB_KERNEL_ROOTS",
        ):
            os.environ.pop(var, None)

        def stock():
            return KernelSpecManager(kernel_dirs=[str(symlinks)], ensure_native_kernel=False)

        def afhub():
            return EnvKernelSpecManager(
                kernel_dirs=[],
                ensure_native_kernel=False,
                roots=[str(root)],
                image_prefixes=[str(image)],
            )

        assert len(stock().get_all_specs()) == n
        assert len(afhub().get_all_specs()) == n, afhub().get_all_specs().keys()

        cold_stock, cold_afhub = timed_pair(
            lambda: stock().get_all_specs(), lambda: afhub().get_all_specs(), reps[0]
        )
        s, a = stock(), afhub()
        s.get_all_specs()
        a.get_all_specs()
        warm_stock, warm_afhub = timed_pair(s.get_all_specs, a.get_all_specs, reps[1])
        lookup_stock, lookup_afhub = timed_pair(
            lambda: s.get_kernel_spec(f"env{n - 1:03d}"),
            lambda: a.get_kernel_spec(f"env-env{n - 1:03d}-python3"),
            reps[1],
        )

    print(f"kernel discovery, {n} environments (median seconds; ratio = afhub / stock)")
    print(f"{'':18}{'stock (symlinks)':>18}{'afhub (envs)':>16}{'ratio':>9}")
    for label, st, af in [
        ("cold listing", cold_stock, cold_afhub),
        ("warm listing", warm_stock, warm_afhub),
        ("get_kernel_spec", lookup_stock, lookup_afhub),
    ]:
        print(f"{label:18}{st * 1e3:15.2f} ms{af * 1e3:13.2f} ms{af / st:9.2f}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--smoke"]:
        main(10, reps=(3, 3))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
