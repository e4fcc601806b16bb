"""Slurm: afhub's job script, ``squeue``/``sbatch`` answers, the capacity query, and
:class:`SlurmProfileSpawner` (batchspawner's ``SlurmSpawner`` with afhub profiles).

The class only names its parts; the hook order is the order of its bases (method resolution):
:class:`.account.BatchAccount` and :class:`.capacity.BatchCapacity` before
:class:`~afhub.spawner.mixin.ProfileSpawnerMixin` (their ``afhub_before_start`` and
``afhub_profile_notes`` replace the mixin's no-op defaults), the mixin before
:class:`.lifecycle.BatchMixin` (its ``start``, ``progress`` and state wrap the job's), and
batchspawner's ``SlurmSpawner`` last. The translation is pure: :mod:`afhub.spawner.translations.slurm`.
"""

from __future__ import annotations

import os
import re

from batchspawner import SlurmSpawner
from traitlets import Dict, Unicode

from ..mixin import ProfileSpawnerMixin
from ..profiles import Resolved
from ..translations.batchfields import DEFAULT_RUNTIME, BatchRequest
from ..translations.slurm import SlurmSettings, slurm_request
from .account import BatchAccount
from .capacity import BatchCapacity, CapacityCache, query_slurm
from .lifecycle import BatchMixin
from .queue import JobState, slurm_job_state

# batchspawner's SlurmSpawner script has no account or QOS line; afhub's adds them
SLURM_SCRIPT = """#!/bin/bash
#SBATCH --output={{homedir}}/jupyterhub_slurmspawner_%j.log
#SBATCH --job-name=spawner-jupyterhub
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --get-user-env=L
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}{% if account %}#SBATCH --account={{account}}
{% endif %}{% if qos %}#SBATCH --qos={{qos}}
{% endif %}{% if runtime %}#SBATCH --time={{runtime}}
{% endif %}{% if memory %}#SBATCH --mem={{memory}}
{% endif %}{% if gres %}#SBATCH --gres={{gres}}
{% endif %}{% if nprocs %}#SBATCH --cpus-per-task={{nprocs}}
{% endif %}{% if reservation %}#SBATCH --reservation={{reservation}}
{% endif %}{% if options %}#SBATCH {{options}}
{% endif %}
set -euo pipefail

trap 'echo SIGTERM received' TERM
{{prologue}}
{% if srun %}{{srun}} {% endif %}{{cmd}}
echo "jupyterhub-singleuser ended gracefully"
{{epilogue}}
"""


class SlurmProfileSpawner(
    BatchAccount, BatchCapacity, ProfileSpawnerMixin, BatchMixin, SlurmSpawner
):
    """batchspawner ``SlurmSpawner`` whose jobs follow the profile a user resolved."""

    afhub_scheduler = "Slurm"
    afhub_scheduler_env = ("SLURM_CONF",)
    afhub_cancel_gone = re.compile(r"Invalid job id specified|already completing or completed")

    # squeue: state, reason (for the progress page), then the host (batchspawner's host regex
    # takes the last word)
    batch_query_cmd = Unicode(
        "squeue -h -j {job_id} -o '%T %r %B'",
        config=True,
        help="Job status query. Default ``squeue -h -j {job_id} -o '%T %r %B'``.",
    )

    batch_script = Unicode(
        SLURM_SCRIPT,
        config=True,
        help="""Job script template (Jinja2) with batchspawner's variables. Default: afhub's,
        which is batchspawner's SlurmSpawner script plus ``--account`` and ``--qos``.""",
    )

    arch_features = Dict(
        config=True,
        help="Architecture -> node feature for ``--constraint``. Default ``{}`` (not constrained).",
    )

    def afhub_translate(self, resolved: Resolved) -> BatchRequest:
        settings = SlurmSettings(
            partition=self.afhub_base("req_partition"),
            account=self.afhub_base("req_account"),
            qos=self.afhub_base("req_qos"),
            runtime=self.afhub_base("req_runtime") or DEFAULT_RUNTIME,
            gpu_types=dict(self.gpu_types),
            arch_features=dict(self.arch_features),
            environment=self.environment_prefix or None,
            apptainer=self.afhub_apptainer(),
        )
        return slurm_request(resolved, settings=settings)

    def afhub_apply_backend(self, config: BatchRequest) -> None:
        self.afhub_apply_request(config)

    def afhub_classify(self, text: str) -> JobState:
        return slurm_job_state(text)

    def afhub_parse_job_id(self, out: str) -> str:
        """``sbatch --parsable`` prints ``<id>`` or ``<id>;<cluster>`` (last line)."""
        m = re.fullmatch(r"([0-9]+)(;[A-Za-z0-9_.-]+)?", (out.strip().splitlines() or [""])[-1])
        if not m:
            raise ValueError(out)
        return m.group(1)

    def afhub_capacity_cache(self) -> CapacityCache:
        timeout = self.capacity_timeout
        key = ("slurm", os.environ.get("SLURM_CONF", ""))
        return self.afhub_shared_cache(key, lambda: query_slurm(timeout))

    def afhub_capacity_key(self, view) -> str | None:
        partition = (view.batch or {}).get("partition") or self.afhub_base("req_partition")
        return partition.split(",")[0] if partition else None
