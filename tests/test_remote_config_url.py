"""A remote typed by hand into config.toml is read as ``lin remote add`` reads its URL: a
``file:///path`` URL (percent-escapes decoded) and a folder relative to the project push and
clone back byte for byte; a URL no remote can have is one line naming config.toml, exit 4."""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import make_model_dir

from lineagestore import Repo


def _config(store_dir: Path, url: str) -> None:
    cfg = store_dir / ".lineage" / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[remote.hand]\nurl = "{url}"\n')


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _push_and_clone(store_dir: Path, lin, remote_folder: Path, tmp_path: Path) -> None:
    src = make_model_dir(store_dir / "model")
    assert lin("commit", src, "-m", "first", "--name", "first")[0] == 0
    code, out, err = lin("push", "hand")
    assert code == 0, err
    assert (remote_folder / "refs" / "heads" / "main").is_file(), sorted(remote_folder.rglob("*"))
    code, out, err = lin("clone", remote_folder, tmp_path / "copy")
    assert code == 0, err
    Repo.open(tmp_path / "copy" / ".lineage").checkout("v001_first", to=tmp_path / "out")
    assert _digests(tmp_path / "out") == _digests(src)


def test_a_hand_typed_file_url_pushes_and_clones_back(store_dir, lin, tmp_path):
    remote_folder = tmp_path / "backup dir"
    _config(store_dir, "file://" + str(remote_folder).replace(" ", "%20"))
    code, out, err = lin("remote", "ls", "--json")
    assert code == 0, err
    assert f'"url": "{remote_folder}"' in out, out
    _push_and_clone(store_dir, lin, remote_folder, tmp_path)


def test_a_hand_typed_relative_folder_is_the_projects(store_dir, lin, tmp_path):
    _config(store_dir, "../rel-backup")
    _push_and_clone(store_dir, lin, (store_dir / ".." / "rel-backup").resolve(), tmp_path)


def test_a_url_no_remote_can_have_is_one_line_naming_config_toml(store_dir, lin):
    make_model_dir(store_dir / "model")
    assert lin("commit", store_dir / "model", "-m", "first", "--name", "first")[0] == 0
    for url, why in (("http://host/x", "unsupported scheme"), ("file://otherhost/x", "a file URL names a folder on this machine")):
        cfg = store_dir / ".lineage" / "config.toml"
        cfg.write_text(cfg.read_text().split("\n[remote.hand]")[0])
        _config(store_dir, url)
        code, out, err = lin("push", "hand")
        assert code == 4, (out, err)
        first = err.splitlines()[0]
        assert first == (f"error: {store_dir / '.lineage' / 'config.toml'}: [remote.hand] remote URL {url!r}: "
                         + why), err
