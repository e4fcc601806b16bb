"""HTCondor: ``condor_q``/``condor_submit`` answers, the pool's capacity query, and
:class:`CondorProfileSpawner` (batchspawner's ``CondorSpawner`` with afhub profiles).

The bases fix the hook order as in :mod:`.slurm`: account and capacity before the profile
mixin, the mixin before the job lifecycle, batchspawner's ``CondorSpawner`` last. The
translation is pure: :mod:`afhub.spawner.translations.htcondor`.
"""

from __future__ import annotations

import re

from batchspawner import CondorSpawner
from traitlets import Unicode

from ..mixin import ProfileSpawnerMixin
from ..profiles import Resolved
from ..translations.batchfields import DEFAULT_RUNTIME, BatchRequest
from ..translations.htcondor import CONDOR_ARCH, CondorSettings, condor_request
from .account import BatchAccount
from .capacity import POOL, BatchCapacity, CapacityCache, query_condor
from .lifecycle import BatchMixin
from .queue import CONDOR_ATTRIBUTES, JobState, condor_job_state


class CondorProfileSpawner(
    BatchAccount, BatchCapacity, ProfileSpawnerMixin, BatchMixin, CondorSpawner
):
    """batchspawner ``CondorSpawner`` whose jobs follow the profile a user resolved."""

    afhub_scheduler = "HTCondor"
    afhub_scheduler_env = ("CONDOR_CONFIG",)
    afhub_cancel_gone = re.compile(
        r"not found|Couldn't find/remove all jobs|already marked for removal", re.I
    )

    # the job ad as JSON, with what the progress page explains (queue.condor_job_state)
    batch_query_cmd = Unicode(
        "condor_q {job_id} -json -attributes " + ",".join(CONDOR_ATTRIBUTES),
        config=True,
        help="Job status query (its JSON answer is read by afhub). Default: ``condor_q {job_id} "
        "-json -attributes " + ",".join(CONDOR_ATTRIBUTES) + "``.",
    )

    requirements = Unicode(
        "", config=True, help="ClassAd requirements added to every job. Default none."
    )
    accounting_group = Unicode("", config=True, help="Accounting group. Default none.")
    default_cpu = Unicode(
        str(CondorSettings.cpu), config=True, help="CPUs when a profile gives none. Default ``1``."
    )
    default_memory = Unicode(
        CondorSettings.memory,
        config=True,
        help="Memory when a profile gives none. Default ``2Gi``.",
    )
    capacity_pool = Unicode(
        "", config=True, help="Collector queried for capacity. Default: the local configuration's."
    )

    def afhub_translate(self, resolved: Resolved) -> BatchRequest:
        settings = CondorSettings(
            requirements=self.requirements,
            accounting_group=self.accounting_group,
            runtime=self.afhub_base("req_runtime") or DEFAULT_RUNTIME,
            cpu=int(self.default_cpu),
            memory=self.default_memory,
            gpu_types=dict(self.gpu_types),
            environment=self.environment_prefix or None,
            apptainer=self.afhub_apptainer(),
        )
        return condor_request(resolved, username=self.afhub_account(), settings=settings)

    def afhub_apply_backend(self, config: BatchRequest) -> None:
        self.afhub_apply_request(config)

    def afhub_classify(self, text: str) -> JobState:
        return condor_job_state(text)

    def afhub_parse_job_id(self, out: str) -> str:
        """``condor_submit`` prints ``1 job(s) submitted to cluster <id>.``"""
        m = re.search(r"job\(s\) submitted to cluster ([0-9]+)\.", out)
        if not m:
            raise ValueError(out)
        return m.group(1)

    def cmd_formatted_for_batch(self):
        # batchspawner's Condor template wraps the command in Arguments = "-c 'exec {cmd}'"
        return super().cmd_formatted_for_batch().replace('"', '""').replace("'", "''")

    def afhub_capacity_cache(self) -> CapacityCache:
        pool, timeout = self.capacity_pool or None, self.capacity_timeout
        key = ("htcondor", self.capacity_pool)
        return self.afhub_shared_cache(key, lambda: query_condor(pool, timeout))

    def afhub_capacity_key(self, view) -> str | None:
        arch = (view.resources or {}).get("arch")
        if not arch and view.image is not None and len(view.image.archs) == 1:
            arch = view.image.archs[0]
        return f"{POOL}/{CONDOR_ARCH[arch]}" if arch else POOL
