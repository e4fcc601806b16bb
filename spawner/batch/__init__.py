"""The ``slurm`` and ``htcondor`` backends: batchspawner with afhub profiles.

Glue only. A resolved profile is translated by :mod:`afhub.spawner.translations.slurm` /
:mod:`afhub.spawner.translations.htcondor` (pure) into batchspawner ``req_*`` values and a
server command; this package sets them and changes batchspawner where it is unsafe or leaky.
One job per module:

- :mod:`.lifecycle`: :class:`BatchMixin`, submit/query/start/stop/poll/progress/state around
  batchspawner (template variables checked, minimal command environment, a failed or cancelled
  start cancels its job, deferred cancels retried, the scheduler's reasons on the progress page);
- :mod:`.account`: :class:`~.account.BatchAccount`, the system account jobs run as, checked
  before anything is submitted (HTTP 403 for system accounts);
- :mod:`.capacity`: idle CPUs/GPUs per partition or pool and the notes on the spawn page
  (:class:`~.capacity.BatchCapacity`);
- :mod:`.secrets`: secrets handed to a job outside the scheduler (pure);
- :mod:`.queue`: scheduler answers -> job state and progress sentences (pure);
- :mod:`.slurm`, :mod:`.htcondor`: per-scheduler specifics and the two spawner classes.

The hook order is the order of the spawner classes' bases (method resolution), never an
assignment: ``BatchAccount, BatchCapacity`` (backend hooks: ``afhub_before_start``,
``afhub_profile_notes``), then ``ProfileSpawnerMixin`` (wraps start, progress, state), then
``BatchMixin`` (the job), then batchspawner's ``SlurmSpawner``/``CondorSpawner``.

``afhub.spawner.batch:SlurmProfileSpawner`` and ``:CondorProfileSpawner`` are the entry points
(``jupyterhub.spawners``); they are re-exported here.
"""

from .htcondor import CondorProfileSpawner
from .lifecycle import (
    BatchMixin,
    SchedulerTrouble,
    UnsafeSubmission,
    check_subvars,
    scheduler_error,
)
from .slurm import SLURM_SCRIPT, SlurmProfileSpawner

__all__ = [
    "SLURM_SCRIPT",
    "BatchMixin",
    "CondorProfileSpawner",
    "SchedulerTrouble",
    "SlurmProfileSpawner",
    "UnsafeSubmission",
    "check_subvars",
    "scheduler_error",
]
