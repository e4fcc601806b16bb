"""Dask workers in the kernel's own environment on Slurm (issue 22): the facility of
``tests/test_dask_slurm_integration.py`` (``afhub up`` with ``dask.backend: slurm`` against a
real Slurm on this machine, ``tests/slurm.py``), whose node shares the home with the servers.
alice's venv (made as in ``tests/test_dask_user_env_integration.py``) runs her cluster's
scheduler and workers as Slurm jobs of her account: their ``sys.prefix`` is the venv, they
import the package only it has, and the version check finds them equal to her kernel. Nothing
is faked.
"""

from __future__ import annotations

import pytest
import test_dask_slurm_integration as slurm_facility
from test_dask_user_env_integration import check_workers_in_venv, make_alice_venv

pytestmark = pytest.mark.integration

slurm = slurm_facility.slurm  # the fixture: a real Slurm, stopped after


@pytest.fixture(scope="module")
def fac(slurm, start_facility):
    facility = start_facility(slurm_facility._values(), name="dask-slurm-user-env")
    yield facility
    facility.stop()


def test_new_cluster_from_her_venv_runs_slurm_workers_in_it(fac, slurm):
    hs, prefix = make_alice_venv(fac)
    submitted = set(slurm.submitted())
    check_workers_in_venv(hs, prefix)
    # the scheduler and both workers were Slurm jobs, running her venv's Python
    new = set(slurm.submitted()) - submitted
    assert len(new) >= 3, new
