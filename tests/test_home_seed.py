"""Sample notebooks placed in a new user's home (afhub.spawner.home_seed), on real directories.

Once per home, never overwriting, never following a link the user planted, owned by the user.
"""

from __future__ import annotations

import json
import os

import pytest
from afhub.spawner.home_seed import MARKER, SAMPLES_DIR, samples, seed_home

SAMPLE = "hzz-dimuon.ipynb"


def test_the_sample_ships_and_is_a_notebook():
    assert SAMPLE in samples()
    with open(os.path.join(SAMPLES_DIR, SAMPLE)) as f:
        nb = json.load(f)
    assert nb["nbformat"] == 4
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for needed in ("import uproot", "import awkward", "import hist", "uproot-HZZ.root"):
        assert needed in code


def test_fresh_home_gets_the_samples_once(tmp_path):
    assert seed_home(str(tmp_path)) == samples()
    assert (tmp_path / SAMPLE).read_bytes() == open(os.path.join(SAMPLES_DIR, SAMPLE), "rb").read()
    assert (tmp_path / MARKER).exists()
    (tmp_path / SAMPLE).unlink()  # the user deleted it
    assert seed_home(str(tmp_path)) == []
    assert not (tmp_path / SAMPLE).exists()


def test_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / SAMPLE).write_text("my own work")
    assert seed_home(str(tmp_path)) == [n for n in samples() if n != SAMPLE]
    assert (tmp_path / SAMPLE).read_text() == "my own work"


def test_planted_symlink_is_not_followed(tmp_path):
    home, victim = tmp_path / "home", tmp_path / "victim"
    home.mkdir()
    victim.write_text("precious")
    (home / SAMPLE).symlink_to(victim)
    seed_home(str(home))
    assert victim.read_text() == "precious"
    assert (home / SAMPLE).is_symlink()


def test_marker_symlink_is_not_followed(tmp_path):
    home, victim = tmp_path / "home", tmp_path / "victim"
    home.mkdir()
    (home / MARKER).symlink_to(victim)
    assert seed_home(str(home)) == []
    assert not victim.exists()


def test_missing_or_symlinked_home_is_left_alone(tmp_path):
    assert seed_home(str(tmp_path / "nope")) == []
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert seed_home(str(tmp_path / "link")) == []
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_files_belong_to_the_given_user(tmp_path):
    seed_home(str(tmp_path), uid=65534, gid=65534)
    for name in (SAMPLE, MARKER):
        st = (tmp_path / name).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        assert st.st_mode & 0o777 == 0o644
