"""One profile's job as the batch backend would submit it (``afhub render --job``).

The Slurm script (``#SBATCH`` lines) or HTCondor submit description of a profile and its
chosen options, built by the same spawner class, configuration and translation the hub uses,
for a stand-in user in every group the file names, so an operator checks ``--gres=gpu:a100:1``
before any user tries. Nothing is submitted, no account is looked up, no file is written.

What must not live here: the translation itself (``spawner/translations/``), the spawner
(``spawner/batch/``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from .problems import Problem, ValuesError

PREVIEW_USER = "someuser"
PREVIEW_HOME = "/home/someuser"


class _Group:
    def __init__(self, name: str):
        self.name = name


class _User:
    """The stand-in hub user: in every group ``groups``."""

    def __init__(self, name: str, groups):
        self.name = name
        self.groups = [_Group(g) for g in sorted(groups)]


def _groups(values) -> set[str]:
    from .dask_section import _groups_used

    return _groups_used(values)


def job_script(values: dict, user_options: Mapping[str, str]) -> str:
    """The job script of ``user_options`` (``{"profile": slug, option: choice}``) on
    ``values`` (validated, defaults filled) with a batch backend; ValuesError naming the
    option for a profile or choice that does not resolve."""
    from afhub.spawner import batch
    from afhub.spawner.profiles import OptionsError
    from afhub.spawner.spawn_section import BATCH_CLASSES
    from traitlets.config import Config

    from . import apply

    kind = values["backend"]["type"]
    if kind not in BATCH_CLASSES:
        raise ValuesError(
            [Problem("backend.type", f"--job shows batch jobs; this file's backend is {kind}")]
        )
    c = Config()  # the plan the hub applies, secrets left out (a job needs none of them)
    plan = apply.build(values, data_dir="/nonexistent", deployment="standalone")
    for section, traits in plan.sections.items():
        for key, value in traits.items():
            if not isinstance(value, apply.SecretRef):
                setattr(c[section], key, value)
    groups = _groups(values)
    sp = getattr(batch, BATCH_CLASSES[kind])(config=c, user=_User(PREVIEW_USER, groups))
    sp.req_username, sp.req_homedir = PREVIEW_USER, PREVIEW_HOME
    sp.req_keepvars = ""  # the hub's environment is not asked for: the names are shown below
    try:
        sp.afhub_apply_resolved(sp.afhub_catalogue().resolve(groups, dict(user_options)))
    except OptionsError as e:
        where = f"--job {e.field}" if e.field else "--job"
        raise ValuesError([Problem(where, e.message)]) from None
    # the names a start exports (values never: the secrets file holds the token)
    subvars = sp.afhub_subvars({"PATH": "", "JUPYTERHUB_API_URL": "", "JUPYTERHUB_USER": ""})
    subvars["cmd"] = sp.cmd_formatted_for_batch()
    return asyncio.run(sp._get_batch_script(**subvars))

