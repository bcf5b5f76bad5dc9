"""`lin fsck` says how to get back what is missing, and `lin fsck --repair` works even when the
whole `objects/` folder is gone."""

from __future__ import annotations

import shutil

from conftest import make_model_dir

from lineagestore import Repo


def _store_with_backup(tmp_path, lin):
    proj = tmp_path / "p"
    store = proj / ".lineage"
    assert lin("--store", store, "init")[0] == 0
    model = make_model_dir(tmp_path / "m", seed=3)
    assert lin("--store", store, "import", model, "--name", "base")[0] == 0
    assert lin("--store", store, "remote", "add", "o", tmp_path / "remote", "--backup")[0] == 0
    assert lin("--store", store, "backup")[0] == 0
    return store, model


def test_repair_when_objects_folder_is_gone(tmp_path, lin):
    store, model = _store_with_backup(tmp_path, lin)
    shutil.rmtree(store / "objects")
    code, out, _ = lin("--store", store, "fsck")
    assert code == 1
    missing = {line.split()[2] for line in out.splitlines() if line.startswith("missing:")}
    assert len(missing) == 1  # HEAD's commit: the first thing a walk misses
    assert "hint: 1 object(s) missing or damaged: `lin fsck --repair` fetches them, verified, from the backup " \
           "remote 'o'" in out
    code, out, err = lin("--store", store, "fsck", "--repair")
    assert code == 0, out + err
    assert out.splitlines()[-1].endswith(": ok")
    target = tmp_path / "out"
    assert lin("--store", store, "checkout", "v001", "--to", target)[0] == 0
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {p.name: p.read_bytes() for p in model.iterdir()}
    assert Repo.open(store).fsck().ok


def test_fsck_without_a_remote_says_where_else_to_look(tmp_path, lin):
    store = tmp_path / "p" / ".lineage"
    lin("--store", store, "init")
    lin("--store", store, "import", make_model_dir(tmp_path / "m", seed=3), "--name", "base")
    shutil.rmtree(store / "objects")
    code, out, _ = lin("--store", store, "fsck")
    assert code == 1 and "no remote is configured" in out and "lin remote add NAME URL" in out


def test_a_bad_grace_flag_is_one_line_naming_the_flag(tmp_path, lin):
    store = tmp_path / "p" / ".lineage"
    lin("--store", store, "init")
    for bad in ("nan", "inf", "-1", "1e400", "30m"):
        code, out, err = lin("--store", store, "gc", f"--grace={bad}")
        assert code == 4 and err.startswith("error: --grace: ") and len(err.strip().splitlines()) <= 2, (bad, err)
