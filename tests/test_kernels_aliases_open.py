"""Notebooks saved with another kernel name (nb_conda_kernels, another site) open with the
environment kernel it means, in JupyterLab, without changing the file.

JupyterLab picks a notebook's kernel by exact name in /api/kernelspecs, then by the only kernel
of its language; the server therefore returns opened notebooks with the canonical kernelspec.

- tables: `canonical_kernelspec` over names built by `envs.build_kernels` (pure, no I/O);
- the wrapped `get` of real jupyter_server contents managers (sync and async) with a real
  `EnvKernelSpecManager` in-process;
- a real `jupyter server` with the BNL layout (`<image>/opt/micromamba/envs/analysis-systems`
  shipping a `python3` kernelspec): GET /api/contents, file on disk unchanged, save and copy;
- headless Chromium opening the notebook in JupyterLab.
"""

from __future__ import annotations

import inspect
import logging
import re
import time

import nbformat
import pytest
from afhub.server_ext import envs
from afhub.server_ext.kernel_discovery import EnvKernelSpecManager
from afhub.server_ext.notebook_kernels import canonical_kernelspec, install
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_server.services.contents.filemanager import (
    AsyncFileContentsManager,
    FileContentsManager,
)
from kernels_helpers import JupyterServer, make_conda_prefix, python_spec

ALIAS = "conda-env-analysis-systems-py"
CANONICAL = {
    "name": "env-analysis-systems-python3",
    "display_name": "Python (analysis-systems)",
    "language": "python",
}


# ---- pure mapping ------------------------------------------------------------------------


def _facts(prefix, kind, name, source, *, shipped=None, ipykernel=False):
    return envs.EnvFacts(
        prefix=prefix,
        realpath=prefix,
        kind=kind,
        name=name,
        source=source,
        python=prefix + "/bin/python",
        has_ipykernel=ipykernel,
        shipped=[
            envs.ShippedSpec(d, f"{prefix}/share/jupyter/kernels/{d}", s)
            for d, s in (shipped or {}).items()
        ],
    )


ENVS = [
    _facts(
        "/opt/micromamba/envs/analysis-systems",
        "conda",
        "analysis-systems",
        "image",
        shipped={"python3": python_spec("python", "Python (analysis-systems)")},
    ),
    _facts("/opt/conda", "conda", "base", "conda", ipykernel=True),
    _facts(
        "/home/u/.conda/envs/rstats",
        "conda",
        "rstats",
        "conda",
        shipped={"ir": {"argv": ["R"], "display_name": "R", "language": "R"}},
    ),
    _facts("/home/u/envs/fit", "venv", "fit", "root", ipykernel=True),  # wins the name "fit"
    _facts("/opt/micromamba/envs/fit", "conda", "fit", "image", ipykernel=True),
]


def _listing():
    kernels, aliases = envs.build_kernels(ENVS)
    listed = {name: entry.spec for name, entry in kernels.items()}
    listed["python3"] = {"display_name": "Python 3 (ipykernel)", "language": "python"}

    def resolve(name):  # what EnvKernelSpecManager.resolve does with its cache
        name = aliases.get(name.lower(), name.lower())
        return name if name in kernels else None

    return listed, resolve


def _ks(name, display_name="Python [conda env:x]", **extra):
    return {"kernelspec": {"name": name, "display_name": display_name, **extra}}


@pytest.mark.parametrize(
    "metadata, expected",
    [
        # nb_conda_kernels names of an image conda env (BNL)
        (_ks(ALIAS), CANONICAL),
        (_ks("conda-env-analysis-systems-python3"), CANONICAL),
        (_ks("Conda-Env-Analysis-Systems-Py"), CANONICAL),
        # nb_conda_kernels' root environment
        (
            _ks("conda-root-py"),
            {
                "name": "env-base-python3",
                "display_name": "Python 3 (ipykernel) [base]",
                "language": "python",
            },
        ),
        # conda-env-<env>-<lang> and conda-env-<env>-<kernelspec> of an R kernel
        (
            _ks("conda-env-rstats-r"),
            {"name": "env-rstats-ir", "display_name": "R [rstats]", "language": "R"},
        ),
        (
            _ks("conda-env-rstats-ir"),
            {"name": "env-rstats-ir", "display_name": "R [rstats]", "language": "R"},
        ),
        # nb_conda_kernels only knew conda envs: `fit` means the conda one, not the venv
        (
            _ks("conda-env-fit-py"),
            {
                "name": "env-fit-c485e9-python3",
                "display_name": "Python 3 (ipykernel) [fit, /opt/micromamba/envs]",
                "language": "python",
            },
        ),
        # the hashed name another site gave the environment that keeps `env-fit-python3` here
        (
            _ks("env-fit-ad0c12-python3"),
            {
                "name": "env-fit-python3",
                "display_name": "Python 3 (ipykernel) [fit, /home/u/envs]",
                "language": "python",
            },
        ),
        # other kernelspec keys are kept, language follows the kernel
        (
            _ks("conda-env-rstats-r", language="r", custom=1),
            {"name": "env-rstats-ir", "display_name": "R [rstats]", "language": "R", "custom": 1},
        ),
    ],
)
def test_alias_becomes_canonical_kernelspec(metadata, expected):
    listed, resolve = _listing()
    assert canonical_kernelspec(metadata, listed=listed, resolve=resolve) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        _ks("python3"),  # listed stock kernel
        _ks("env-analysis-systems-python3"),  # already canonical
        _ks("env-fit-c485e9-python3"),  # canonical (hashed) name
        _ks("conda-env-elsewhere-py"),  # unknown here
        _ks("ir"),  # a kernel of another site, not an alias here
        _ks(""),
        {"kernelspec": {"display_name": "no name"}},
        {"kernelspec": {"name": 3, "display_name": "x"}},
        {"kernelspec": "python3"},
        {"language_info": {"name": "python"}},  # no kernelspec at all
        {},
        None,
    ],
)
def test_other_names_are_left_alone(metadata):
    listed, resolve = _listing()
    assert canonical_kernelspec(metadata, listed=listed, resolve=resolve) is None


def test_listed_name_beats_alias_and_unlisted_target_is_not_used():
    listed, resolve = _listing()
    # the user installed a stock kernelspec literally named like an alias: Lab finds it, keep it
    stock = {**listed, ALIAS: {"display_name": "my own", "language": "python"}}
    assert canonical_kernelspec(_ks(ALIAS), listed=stock, resolve=resolve) is None
    # the alias' kernel is filtered out (allowed_kernelspecs): do not point at a missing kernel
    del listed["env-analysis-systems-python3"]
    assert canonical_kernelspec(_ks(ALIAS), listed=listed, resolve=resolve) is None


# ---- real contents managers, in-process ----------------------------------------------------


def write_notebook(path, kernelspec: dict | None) -> bytes:
    metadata = {"language_info": {"name": "python"}}
    if kernelspec is not None:
        metadata["kernelspec"] = kernelspec
    nb = nbformat.v4.new_notebook(metadata=metadata)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    nbformat.write(nb, path)
    return path.read_bytes()


NB_CONDA_KS = {"name": ALIAS, "display_name": "Python [conda env:analysis-systems]"}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The BNL image layout: /opt/micromamba/envs/analysis-systems ships `python3`."""
    envs_dir = tmp_path_factory.mktemp("image") / "opt" / "micromamba" / "envs"
    make_conda_prefix(
        envs_dir / "analysis-systems",
        kernels={"python3": python_spec("python", "Python (analysis-systems)")},
    )
    return envs_dir


def env_ksm(image, tmp_path, cls=EnvKernelSpecManager, **kw):
    (tmp_path / "kernels").mkdir(exist_ok=True)
    return cls(
        roots=[],
        conda_envs_dirs=[],
        conda_defaults=False,
        image_prefixes=[str(image)],
        kernel_dirs=[str(tmp_path / "kernels")],  # stock: only the native python3
        **kw,
    )


async def call_get(cm, path, **kw):
    model = cm.get(path, **kw)
    return await model if inspect.isawaitable(model) else model


@pytest.mark.parametrize("cm_class", [FileContentsManager, AsyncFileContentsManager])
async def test_wrapped_get_of_sync_and_async_managers(cm_class, image, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    on_disk = write_notebook(root / "nb.ipynb", NB_CONDA_KS)
    cm = cm_class(root_dir=str(root))
    original = cm.get
    log = logging.getLogger("test")
    assert install(contents_manager=cm, kernel_spec_manager=env_ksm(image, tmp_path), log=log)

    assert inspect.signature(cm.get) == inspect.signature(original)
    assert inspect.iscoroutinefunction(cm.get) == inspect.iscoroutinefunction(original)
    assert (cm.get.__name__, cm.get.__doc__) == ("get", original.__doc__)
    model = await call_get(cm, "nb.ipynb")
    assert model["content"]["metadata"]["kernelspec"] == CANONICAL
    assert model["content"].metadata.kernelspec.name == CANONICAL["name"]  # still a NotebookNode
    assert (root / "nb.ipynb").read_bytes() == on_disk
    assert (await call_get(cm, "nb.ipynb", content=False))["content"] is None
    assert (await call_get(cm, ""))["type"] == "directory"
    # loading twice does not wrap twice
    assert not install(contents_manager=cm, kernel_spec_manager=env_ksm(image, tmp_path), log=log)


@pytest.mark.parametrize(
    "make_ksm",
    [
        lambda image, tmp: KernelSpecManager(),
        lambda image, tmp: env_ksm(image, tmp, enabled=False),
    ],
    ids=["stock-manager", "discovery-disabled"],
)
def test_not_installed_unless_environment_kernels_are_on(make_ksm, image, tmp_path):
    cm = FileContentsManager(root_dir=str(tmp_path))
    log = logging.getLogger("test")
    assert not install(contents_manager=cm, kernel_spec_manager=make_ksm(image, tmp_path), log=log)
    assert "get" not in vars(cm)


async def test_a_failing_lookup_never_breaks_opening(image, tmp_path, caplog):
    # Fault injected at one boundary: the kernel spec listing raises.
    class Failing(EnvKernelSpecManager):
        def get_all_specs(self):
            raise OSError("disk gone")

    write_notebook(tmp_path / "nb.ipynb", NB_CONDA_KS)
    cm = AsyncFileContentsManager(root_dir=str(tmp_path))
    ksm = env_ksm(image, tmp_path, cls=Failing)
    install(contents_manager=cm, kernel_spec_manager=ksm, log=logging.getLogger("test"))
    model = await cm.get("nb.ipynb")
    assert model["content"]["metadata"]["kernelspec"] == NB_CONDA_KS
    assert f"cannot check kernel '{ALIAS}' of nb.ipynb" in caplog.text


# ---- real jupyter server ------------------------------------------------------------------

NOTEBOOKS = {
    "aliased.ipynb": NB_CONDA_KS,
    "lab-aliased.ipynb": NB_CONDA_KS,  # opened by the browser test only
    "lab-elsewhere.ipynb": {"name": "conda-env-elsewhere-py", "display_name": "Python [x]"},
    "save-me.ipynb": NB_CONDA_KS,
    "copy-me.ipynb": NB_CONDA_KS,
    "python3.ipynb": {"name": "python3", "display_name": "Python 3 (ipykernel)"},
    "elsewhere.ipynb": {"name": "conda-env-elsewhere-py", "display_name": "Python [x]"},
    "canonical.ipynb": CANONICAL,
    "none.ipynb": None,
}


@pytest.fixture(scope="module")
def server(image, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    srv = JupyterServer(home, env={"AFHUB_IMAGE_PREFIXES": str(image)})
    srv.on_disk = {name: write_notebook(home / name, ks) for name, ks in NOTEBOOKS.items()}
    srv.start()
    yield srv
    srv.stop()


def test_contents_api_returns_canonical_kernel_file_unchanged(server):
    r = server.get("api/contents/aliased.ipynb")
    assert r.status_code == 200, r.text
    assert r.json()["content"]["metadata"]["kernelspec"] == CANONICAL
    assert (server.home / "aliased.ipynb").read_bytes() == server.on_disk["aliased.ipynb"]
    assert "aliased.ipynb names kernel 'conda-env-analysis-systems-py'" in server.log.read_text()


@pytest.mark.parametrize("name", ["python3.ipynb", "elsewhere.ipynb", "canonical.ipynb"])
def test_contents_api_leaves_other_kernel_names(server, name):
    model = server.get(f"api/contents/{name}").json()
    assert model["content"]["metadata"]["kernelspec"] == NOTEBOOKS[name]


def test_contents_api_without_kernelspec_or_content(server):
    assert "kernelspec" not in server.get("api/contents/none.ipynb").json()["content"]["metadata"]
    assert server.get("api/contents/aliased.ipynb?content=0").json()["content"] is None
    listing = server.get("api/contents").json()
    assert {"aliased.ipynb", "none.ipynb"} <= {m["name"] for m in listing["content"]}


def test_saving_from_lab_writes_the_canonical_name(server):
    """The documented trade-off: the file keeps its name until it is saved from the server's
    model, which then carries the canonical name."""
    model = server.get("api/contents/save-me.ipynb").json()
    body = {"type": "notebook", "format": "json", "content": model["content"]}
    r = server.put("api/contents/save-me.ipynb", body)
    assert r.status_code == 200, r.text
    saved = nbformat.read(server.home / "save-me.ipynb", as_version=4)
    assert saved.metadata.kernelspec == CANONICAL


def test_copy_carries_the_canonical_name_original_unchanged(server):
    r = server.post("api/contents", {"copy_from": "copy-me.ipynb"})
    assert r.status_code == 201, r.text
    copied = nbformat.read(server.home / r.json()["path"], as_version=4)
    assert copied.metadata.kernelspec == CANONICAL
    assert (server.home / "copy-me.ipynb").read_bytes() == server.on_disk["copy-me.ipynb"]


# ---- JupyterLab in headless Chromium -------------------------------------------------------


def open_in_lab(browser, server, notebook):
    page = browser.new_context().new_page()
    # ?reset: a fresh workspace, so no notebook of an earlier test is restored
    page.goto(f"{server.url}lab/tree/{notebook}?reset&token={server.token}")
    return page


KERNEL_NAME = ".jp-NotebookPanel-toolbar .jp-Toolbar-kernelName"
KERNEL_DIALOG = ".jp-Dialog"


@pytest.mark.browser
def test_lab_opens_nb_conda_notebook_with_env_kernel(browser, server):
    page = open_in_lab(browser, server, "lab-aliased.ipynb")
    try:
        label = page.locator(KERNEL_NAME)
        label.filter(has_text="Python (analysis-systems)").wait_for(timeout=30_000)
        # the label can show the chosen kernel before Lab has created the session
        deadline = time.monotonic() + 20
        kernels = {}
        while "lab-aliased.ipynb" not in kernels and time.monotonic() < deadline:
            time.sleep(0.2)
            kernels = {s["path"]: s["kernel"]["name"] for s in server.get("api/sessions").json()}
        assert kernels.get("lab-aliased.ipynb") == "env-analysis-systems-python3"
        assert page.locator(KERNEL_DIALOG).count() == 0
    finally:
        page.context.close()
    on_disk = server.on_disk["lab-aliased.ipynb"]
    assert (server.home / "lab-aliased.ipynb").read_bytes() == on_disk


@pytest.mark.browser
def test_lab_asks_for_a_name_no_environment_answers_to(browser, server):
    """The counterpart: Lab's own behaviour for a name afhub cannot map (the check above would
    see this dialog if the mapping were missing)."""
    page = open_in_lab(browser, server, "lab-elsewhere.ipynb")
    try:
        dialog = page.locator(KERNEL_DIALOG)
        dialog.filter(has_text=re.compile("Select Kernel")).wait_for(timeout=30_000)
        assert page.locator(KERNEL_NAME).inner_text() == "No Kernel"
    finally:
        page.context.close()
