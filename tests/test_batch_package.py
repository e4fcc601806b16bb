"""The batch package (``spawner/batch/``): the hook order is fixed by the classes' bases.

The profile mixin calls backend hooks (``afhub_before_start``, ``afhub_profile_notes``) whose
no-op defaults live on :class:`~afhub.spawner.mixin.ProfileSpawnerMixin`; the batch spawners put
the classes that provide them before the mixin in their bases, and the job lifecycle
(``BatchMixin``) after it, so the mixin's ``start``/``progress``/state wrap the job's. No class
takes a method from another class by assignment (``hook = Other.hook``): the method
resolution order alone decides which one runs.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from importlib.metadata import entry_points

import afhub.spawner.batch as batch_package
import pytest
from afhub.spawner.batch import BatchMixin, CondorProfileSpawner, SlurmProfileSpawner
from afhub.spawner.batch.account import BatchAccount
from afhub.spawner.batch.capacity import BatchCapacity
from afhub.spawner.mixin import ProfileSpawnerMixin
from batchspawner import CondorSpawner, SlurmSpawner

SPAWNERS = {SlurmProfileSpawner: SlurmSpawner, CondorProfileSpawner: CondorSpawner}


def provider(cls: type, name: str) -> type:
    """The class in ``cls``'s method resolution order whose body defines ``name``."""
    return next(c for c in cls.__mro__ if name in c.__dict__)


def borrowed(cls: type) -> list[str]:
    """Functions in ``cls``'s body that another class defined (``hook = Other.hook``)."""
    out = []
    for name, value in vars(cls).items():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if not isinstance(value, types.FunctionType):
            continue
        owner = value.__qualname__.rpartition(".")[0]
        if owner != cls.__qualname__:
            out.append(f"{cls.__name__}.{name} = {value.__qualname__}")
    return out


def batch_classes() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(batch_package.__path__):
        module = importlib.import_module(f"{batch_package.__name__}.{info.name}")
        found += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__
        ]
    return found


def test_no_batch_class_takes_a_method_from_another_class():
    classes = batch_classes()
    assert {SlurmProfileSpawner, CondorProfileSpawner, BatchMixin} <= set(classes)
    assert [b for c in classes for b in borrowed(c)] == []


def test_the_check_finds_a_borrowed_method():
    class Hooks:
        def afhub_profile_notes(self, views):
            return {}

    class Spawner:
        afhub_profile_notes = Hooks.afhub_profile_notes

        def own(self):
            return None

    assert borrowed(Spawner) == [
        "Spawner.afhub_profile_notes = "
        "test_the_check_finds_a_borrowed_method.<locals>.Hooks.afhub_profile_notes"
    ]
    assert borrowed(Hooks) == []


@pytest.mark.parametrize("spawner", list(SPAWNERS), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "name, owner",
    [
        # backend hooks: before the mixin's no-op defaults
        ("afhub_before_start", BatchAccount),
        ("afhub_profile_notes", BatchCapacity),
        # the mixin wraps the job's lifecycle
        ("start", ProfileSpawnerMixin),
        ("progress", ProfileSpawnerMixin),
        ("get_state", ProfileSpawnerMixin),
        ("load_state", ProfileSpawnerMixin),
        ("clear_state", ProfileSpawnerMixin),
        # batchspawner's steps afhub changes
        ("submit_batch_script", BatchMixin),
        ("query_job_status", BatchMixin),
        ("run_command", BatchMixin),
        ("stop", BatchMixin),
        ("poll", BatchMixin),
    ],
)
def test_the_bases_decide_which_hook_runs(spawner, name, owner):
    assert provider(spawner, name) is owner


@pytest.mark.parametrize("spawner, base", list(SPAWNERS.items()), ids=lambda c: c.__name__)
def test_the_bases_are_in_hook_order(spawner, base):
    mro = spawner.__mro__
    order = [BatchAccount, BatchCapacity, ProfileSpawnerMixin, BatchMixin, base]
    assert [mro.index(c) for c in order] == sorted(mro.index(c) for c in order)
    # the mixin's start wraps the job's, which wraps batchspawner's
    after_mixin = mro[mro.index(ProfileSpawnerMixin) + 1 :]
    for name in ("start", "progress", "get_state", "load_state", "clear_state"):
        assert next(c for c in after_mixin if name in c.__dict__) is BatchMixin, name


@pytest.mark.parametrize(
    "name, cls",
    [("afhub-slurm", SlurmProfileSpawner), ("afhub-htcondor", CondorProfileSpawner)],
)
def test_the_entry_points_load_the_spawners(name, cls):
    (ep,) = [e for e in entry_points(group="jupyterhub.spawners") if e.name == name]
    assert ep.value == f"afhub.spawner.batch:{cls.__name__}"
    assert ep.load() is cls
