#!/usr/bin/python3
"""A test-only stand-in for ``apptainer`` on the test Slurm's node (tests/test_two_hosts.py).

Apptainer cannot run here: it is not in Debian 12, not on PyPI, and no other registry is
reachable, so the node's ``apptainer`` is this file, installed under that name in a directory
bound only into the node's mount namespace (``SlurmCluster(node_mounts=...)``). It is the one
faked boundary of the two-host test: it accepts what afhub's batch and Dask job scripts run
(``spawner/translations/apptainer.py`` ``server_command``: ``apptainer exec [--nv]
[--bind SRC[:DST[:OPTS]]]... IMAGE COMMAND...``), refuses anything else as apptainer would
(an unknown option, a missing bind source or image directory, a malformed image reference),
records the call as one JSON file for the test's assertions, and runs COMMAND on the node with
the server environment first on ``PATH`` (what the analysis image would provide). Host
variables pass through, as with apptainer without ``--cleanenv``.

Its settings (where to record, which environment) are in ``apptainer-standin.json`` next to the
installed file. Standard library only: it runs as the job's user with the system Python.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid

REF = re.compile(
    r"^(docker|oras)://[A-Za-z0-9][A-Za-z0-9._-]*(:[0-9]+)?(/[A-Za-z0-9._-]+)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


def fail(msg: str) -> None:
    print(f"FATAL:   {msg} (apptainer test stand-in)", file=sys.stderr)
    sys.exit(255)


def parse(argv: list[str]) -> dict:
    """``exec`` options, image and command; exits 255 on anything apptainer would refuse or
    afhub never passes."""
    if not argv or argv[0] != "exec":
        fail(f"only 'apptainer exec' is run by afhub's jobs, got {argv[:1]}")
    nv, binds, i = False, [], 1
    while i < len(argv) and argv[i].startswith("-"):
        opt = argv[i]
        if opt == "--nv":
            nv = True
        elif opt in ("--bind", "-B"):
            if i + 1 >= len(argv):
                fail(f"{opt} needs a value")
            for spec in argv[i + 1].split(","):
                src = spec.split(":")[0]
                if not os.path.exists(src):
                    fail(f"mount source {src} doesn't exist")
                binds.append(spec)
            i += 1
        else:
            fail(f"unknown option {opt}")
        i += 1
    if i >= len(argv):
        fail("no image given")
    image, command = argv[i], argv[i + 1 :]
    if image.startswith("/"):
        if not os.path.exists(image):
            fail(f"could not open image {image}: no such file or directory")
    elif not REF.match(image):
        fail(f"not a container image reference: {image!r}")
    if not command:
        fail("no command given")
    return {"nv": nv, "binds": binds, "image": image, "command": command}


def main(argv: list[str]) -> None:
    here = os.path.dirname(os.path.realpath(__file__))
    with open(os.path.join(here, "apptainer-standin.json")) as f:
        settings = json.load(f)
    call = parse(argv)
    record = {
        **call,
        "argv": argv,
        "uid": os.getuid(),
        "job": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    path = os.path.join(settings["record"], f"{uuid.uuid4().hex}.json")
    with open(path, "x") as f:
        json.dump(record, f)
    env = dict(os.environ)
    env["PATH"] = os.path.join(settings["server_env"], "bin") + ":" + env.get("PATH", os.defpath)
    command = call["command"]
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        fail(f"{command[0]}: {e.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
