"""Notebooks saved with another kernel name open with the matching environment kernel.

JupyterLab chooses a notebook's kernel by looking `metadata.kernelspec.name` up in
`/api/kernelspecs` (exact name, then the only kernel of the notebook's language); it never asks the
server to resolve an alias. A notebook saved with nb_conda_kernels' `conda-env-analysis-systems-py`
(or with the hashed name another afhub gave the environment) would make Lab ask the user to pick a
kernel, although `EnvKernelSpecManager` knows which environment kernel that name means.

What lives here:

- `canonical_kernelspec` (pure): the kernelspec metadata Lab should see instead of the notebook's,
  or None to leave it alone (no kernelspec, a listed name such as `python3`, an unknown name).
- `rewrite_notebook_model` and `wrap_contents_get` (I/O): the contents manager *instance*'s `get`
  is wrapped (same signature, still a coroutine function for async managers) so that notebook
  models returned with content carry the canonical kernelspec. Nothing here writes files: the
  notebook on disk keeps its name until the user saves it from Lab.
- `setup_notebook_kernels(serverapp)`, called by the extension loader; it does nothing unless
  the kernel spec manager is an enabled `EnvKernelSpecManager`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping

from nbformat import NotebookNode, from_dict

_MARK = "_afhub_kernel_aliases"


def kernelspec_name(notebook: object) -> str | None:
    """`metadata.kernelspec.name` of a notebook dict, or None if it has none (or not a string)."""
    metadata = notebook.get("metadata") if isinstance(notebook, Mapping) else None
    kernelspec = metadata.get("kernelspec") if isinstance(metadata, Mapping) else None
    name = kernelspec.get("name") if isinstance(kernelspec, Mapping) else None
    return name if isinstance(name, str) and name else None


def canonical_kernelspec(
    metadata: object,
    *,
    listed: Mapping[str, Mapping],
    resolve: Callable[[str], str | None],
) -> dict | None:
    """The `kernelspec` notebook metadata JupyterLab should see, or None to keep the notebook's.

    `listed`: what `/api/kernelspecs` lists, kernel name -> spec (`display_name`, `language`).
    `resolve`: kernel name or alias -> canonical environment kernel name (None if unknown).
    A name Lab finds in `listed` is never changed (a real kernel beats an alias, `python3` stays
    `python3`); otherwise a resolvable alias becomes its canonical kernel, provided that kernel is
    listed. Other keys of the notebook's kernelspec are kept.
    """
    name = kernelspec_name({"metadata": metadata})
    if name is None or name in listed:
        return None
    canonical = resolve(name)
    if canonical is None or canonical == name or canonical not in listed:
        return None
    spec = listed[canonical]
    kernelspec = dict(metadata["kernelspec"])
    kernelspec["name"] = canonical
    kernelspec["display_name"] = str(spec.get("display_name") or canonical)
    if spec.get("language"):
        kernelspec["language"] = spec["language"]
    return kernelspec


def rewrite_notebook_model(model: object, *, kernel_spec_manager, log: logging.Logger) -> None:
    """Replace an aliased `metadata.kernelspec` in a contents model (notebook, with content) by
    the canonical environment kernel's, in place. Errors are logged, never raised."""
    if not (isinstance(model, dict) and model.get("type") == "notebook"):
        return
    content = model.get("content")
    name = kernelspec_name(content)
    if name is None:
        return
    ksm = kernel_spec_manager
    try:
        ksm.refresh()  # stat calls only when nothing changed
        canonical = ksm.resolve(name)
        if canonical is None or canonical == name:  # python3, canonical names, unknown names
            return
        listed = {k: v.get("spec", {}) for k, v in ksm.get_all_specs().items()}
        new = canonical_kernelspec(content["metadata"], listed=listed, resolve=ksm.resolve)
    except Exception:
        log.warning(
            "afhub kernels: cannot check kernel %r of %s", name, model.get("path"), exc_info=True
        )
        return
    if new is None:
        return
    content["metadata"]["kernelspec"] = from_dict(new) if isinstance(content, NotebookNode) else new
    log.info("afhub kernels: %s names kernel %r, shown as %r", model.get("path"), name, new["name"])


def wrap_contents_get(contents_manager, rewrite: Callable[[object], None]) -> bool:
    """Wrap `contents_manager.get` (on the instance) so `rewrite(model)` sees every model it
    returns. Async managers keep a coroutine function, sync ones a plain function; the wrapper
    has the original's signature (`functools.wraps`). False if already wrapped."""
    original = contents_manager.get
    if getattr(original, _MARK, False):
        return False

    async def _after(awaitable):
        model = await awaitable
        rewrite(model)
        return model

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def get(*args, **kwargs):
            model = await original(*args, **kwargs)
            rewrite(model)
            return model

    else:

        @functools.wraps(original)
        def get(*args, **kwargs):
            model = original(*args, **kwargs)
            if inspect.isawaitable(model):  # a sync-looking manager returning awaitables
                return _after(model)
            rewrite(model)
            return model

    setattr(get, _MARK, True)
    contents_manager.get = get
    return True


def install(*, contents_manager, kernel_spec_manager, log: logging.Logger) -> bool:
    """Wrap the contents manager when the kernel spec manager is an enabled
    `EnvKernelSpecManager`; True if wrapped."""
    from .kernel_discovery import EnvKernelSpecManager

    if not isinstance(kernel_spec_manager, EnvKernelSpecManager) or not kernel_spec_manager.enabled:
        log.info(
            "afhub kernels: kernel spec manager is %s, notebook kernel names are not mapped",
            type(kernel_spec_manager).__name__,
        )
        return False
    rewrite = functools.partial(
        rewrite_notebook_model, kernel_spec_manager=kernel_spec_manager, log=log
    )
    if not wrap_contents_get(contents_manager, rewrite):
        return False
    log.info(
        "afhub kernels: notebooks naming a kernel alias open with its environment kernel (%s)",
        type(contents_manager).__name__,
    )
    return True


def setup_notebook_kernels(serverapp) -> bool:
    """Called by the extension loader once ServerApp has created its managers."""
    return install(
        contents_manager=serverapp.contents_manager,
        kernel_spec_manager=serverapp.kernel_spec_manager,
        log=serverapp.log,
    )
