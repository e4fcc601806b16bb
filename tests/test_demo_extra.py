"""The production distribution has no demo identity provider: it is the ``demo`` extra.

``pip install afhub`` (and every image, which installs the wheel with ``--no-deps`` onto its
lock) brings no oidc-provider-mock; ``make setup``/``make up`` install the hub lock, which is
compiled with ``--extra demo``. ``afhub up`` with ``auth.provider: dev`` but without the extra
stops with a message naming the extra, before starting anything.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from facility import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def metadata(tmp_path_factory) -> str:
    """METADATA of the wheel built from this checkout (its prebuilt lab extension reused)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=900,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(out), "HOME": str(out)},
    )  # fmt: skip
    (whl,) = out.glob("afhub-*.whl")
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode()


def test_demo_provider_only_under_the_demo_extra(metadata):
    requires = [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    demo = [r for r in requires if r.lower().replace("_", "-").startswith("oidc-provider-mock")]
    assert demo, requires
    assert all('extra == "demo"' in r for r in demo), demo
    assert "Provides-Extra: demo" in metadata.splitlines()


def test_hub_lock_has_the_demo_extra_images_do_not():
    """make setup installs the demo provider (the hub lock); no image lock names it."""
    assert "oidc-provider-mock==" in (REPO / "requirements-hub.txt").read_text()
    for lock in ("images/analysis/requirements.txt", "images/hub/requirements.txt"):
        assert "oidc-provider-mock" not in (REPO / lock).read_text(), lock


def test_afhub_up_without_the_demo_extra_says_so(tmp_path):
    # oidc_provider_mock made unimportable, as in an installation without the extra
    code = (
        "import sys; sys.modules['oidc_provider_mock'] = None\n"
        "from afhub.hub_config.cli import main\n"
        f"sys.exit(main(['up', '--data-dir', {str(tmp_path)!r}, '--port', '{free_port()}']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "pip install 'afhub[demo]'" in out and "auth.provider" in out, out
    assert "Traceback" not in out
    assert not list(tmp_path.glob("*.afhub-pid")), "nothing may have been started"
