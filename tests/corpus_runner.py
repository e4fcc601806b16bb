"""Run ``afhub check`` and ``afhub render`` on values files, each in a forked child with limits.

Usage: ``python corpus_runner.py CPU_SECONDS MEMORY_MB FILE...``; prints one JSON line per
(command, file): ``{"command", "file", "rc", "signal", "out", "err", "maxrss_mb", "cpu_s"}``.

afhub is imported once here; each child is forked from this process, so it pays no import time
and its limits (RLIMIT_CPU, RLIMIT_AS) apply to reading that one file. A child that loops or
blows up dies by SIGXCPU/SIGKILL or a MemoryError instead of hanging the test. A wall-clock alarm
(60 s, generous for a loaded machine) catches a child that blocks without using CPU.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile

from afhub.hub_config import cli


def start(argv: list[str], cpu_s: int, mem_mb: int):
    """Fork a child running ``afhub <argv>`` under the limits; (pid, stdout file, stderr file)."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu_used = int(used.ru_utime + used.ru_stime)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_used + cpu_s, cpu_used + cpu_s))
            resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
            import signal

            signal.alarm(60)
            rc = cli.main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # report like the CLI would: a traceback is a failure
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            rc = 99
        os._exit(rc)
    return pid, out, err


def finish(pid: int, out, err) -> dict:
    _, status, usage = os.wait4(pid, 0)
    with out, err:
        out.seek(0)
        err.seek(0)
        return {
            "rc": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "out": out.read().decode("utf-8", "replace"),
            "err": err.read().decode("utf-8", "replace"),
            "maxrss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }


def main() -> None:
    """Every (command, file), as many children at once as this machine has cores."""
    cpu_s, mem_mb, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    runs = []
    for path in files:
        runs.append(("check", path, ["check", path]))
        runs.append(("render", path, ["render", path, "--data-dir", tempfile.gettempdir()]))
    width = max(1, len(os.sched_getaffinity(0)))
    for i in range(0, len(runs), width):
        batch = [
            (command, path, start(argv, cpu_s, mem_mb))
            for command, path, argv in runs[i : i + width]
        ]
        for command, path, child in batch:
            result = finish(*child)
            print(json.dumps({"command": command, "file": path, **result}), flush=True)


if __name__ == "__main__":
    main()
