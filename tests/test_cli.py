"""The `lin` command: output and exit code of each core command, as a user sees them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_model_dir


def _versions(lin):
    code, out, _ = lin("log", "--all", "--json")
    assert code == 0
    return {v["name"]: v for v in json.loads(out)}


@pytest.fixture
def two_versions(store_dir, lin):
    a = make_model_dir(store_dir / "m1", seed=1)
    b = make_model_dir(store_dir / "m2", seed=2)
    assert lin("import", a, "--name", "base", "-m", "the base")[0] == 0
    assert lin("commit", b, "--name", "tuned", "--metric", "final_loss=0.25", "--param", "lr=1e-4")[0] == 0
    return a, b


def test_init_creates_store_and_refuses_twice(tmp_path, monkeypatch, lin):
    monkeypatch.chdir(tmp_path)
    code, out, _ = lin("init")
    assert code == 0 and "Initialized empty lineage store" in out
    assert (tmp_path / ".lineage" / "format").read_text() == "1\n"
    code, _, err = lin("init")
    assert code == 6 and "already exists" in err


def test_import_commit_log_show(two_versions, lin):
    code, out, _ = lin("log")
    assert code == 0
    assert out.index("v002_tuned") < out.index("v001_base")
    assert "final_loss=0.25" in out and "HEAD -> main" in out
    vs = _versions(lin)
    assert vs["v002_tuned"]["parent_names"] == ["v001_base"]
    assert vs["v002_tuned"]["metrics"] == {"final_loss": 0.25}
    assert vs["v002_tuned"]["params"] == {"lr": 0.0001}
    assert vs["v002_tuned"]["active"] and not vs["v001_base"]["active"]
    code, out, _ = lin("show", "v002")
    assert code == 0 and "model.safetensors" in out and "6 tensors" in out and "F32 x3" in out
    code, out, _ = lin("show", "v002", "--json")
    info = json.loads(out)
    assert info["tensors"]["count"] == 6 and info["version"]["env"]["python"]


def test_log_graph_draws_branches(two_versions, store_dir, lin):
    c = make_model_dir(store_dir / "m3", seed=3)
    assert lin("commit", c, "--name", "side", "--parent", "v001")[0] == 0
    code, out, _ = lin("log", "--graph")
    lines = out.splitlines()
    assert lines[0].startswith("* v001_base")
    assert any(l.startswith("├─* v002_tuned") for l in lines)
    assert any(l.startswith("└─* v003_side") and "HEAD" in l for l in lines)


def test_graph_of_a_long_lineage_is_a_straight_line_and_branches_indent():
    """Thousands of versions trained file after file: drawn flat, without recursion limits."""
    from types import SimpleNamespace

    from lineagestore.cli.versions_cmd import graph_lines

    def v(n, parent=None):
        return SimpleNamespace(id=f"c{n}", name=f"v{n:03d}_s", parents=[f"c{parent}"] if parent else [])

    chain = [v(1)] + [v(i, i - 1) for i in range(2, 3001)]
    lines = graph_lines(chain)
    assert len(lines) == 3000 and all(prefix == "" for prefix, _ in lines)
    assert [x.name for _, x in lines[:2]] == ["v001_s", "v002_s"]
    tree = [v(1), v(2, 1), v(3, 2), v(4, 2), v(5, 3), v(6, 4), v(7, 6)]
    drawn = [(prefix, x.name) for prefix, x in graph_lines(tree)]
    assert drawn == [("", "v001_s"), ("", "v002_s"), ("├─", "v003_s"), ("│ ", "v005_s"),
                     ("└─", "v004_s"), ("  ", "v006_s"), ("  ", "v007_s")]


def test_checkout_round_trip_and_status(two_versions, store_dir, lin):
    a, b = two_versions
    code, out, _ = lin("checkout", "v001")
    assert code == 0 and "Checked out v001_base" in out
    work = store_dir / "model"
    for f in a.iterdir():
        assert (work / f.name).read_bytes() == f.read_bytes()
    code, out, _ = lin("status")
    assert "Active version: v001_base" in out and "detached" in out and "matches v001_base" in out
    (work / "config.json").write_text("{}")
    code, out, _ = lin("status", "--json")
    st = json.loads(out)
    assert st["work"]["changes"] == [{"path": "config.json", "change": "modified", "tensors": []}]
    code, _, err = lin("checkout", "v002")
    assert code == 7 and "config.json" in err and "--force" in err
    assert lin("checkout", "main", "--force")[0] == 0
    code, out, _ = lin("status")
    assert "on branch main" in out and "v002_tuned" in out


def test_diff_cli(two_versions, lin):
    code, out, _ = lin("diff", "v001", "v002")
    assert code == 0 and "changed  model.safetensors" in out and "rel L2" in out
    code, out, _ = lin("diff", "v001", "v002", "--json")
    d = json.loads(out)
    assert {t["name"] for f in d["files"] for t in f["tensors"]} >= {"layers.0.weight"}


def test_registry_shape(two_versions, lin):
    code, out, _ = lin("registry")
    reg = json.loads(out)
    assert reg["v002_tuned"]["parent"] == "v001_base"
    assert reg["v002_tuned"]["active"] is True
    assert set(reg["v002_tuned"]) >= {"name", "parent", "training_data", "created", "metrics", "active"}


def test_revisions_prefixes_and_ambiguity(two_versions, store_dir, lin):
    vs = _versions(lin)
    v2 = vs["v002_tuned"]["id"]
    code, out, _ = lin("show", v2[:8], "--json")
    assert code == 0 and (json.loads(out)["version"]["id"], json.loads(out)["version"]["name"]) == (v2, "v002_tuned")
    code, out, _ = lin("show", "HEAD~1", "--json")
    assert code == 0 and json.loads(out)["version"]["id"] == vs["v001_base"]["id"]
    assert json.loads(out)["version"]["name"] == "v001_base"
    code, _, err = lin("show", "v00")
    assert code == 3 and "ambiguous" in err and "v001_base" in err and "v002_tuned" in err
    code, _, err = lin("show", "nope")
    assert code == 3 and "unknown revision 'nope'" in err


def test_tag_and_branch(two_versions, lin):
    vs = _versions(lin)

    def target(rev: str) -> str:
        code, out, err = lin("show", rev, "--json")
        assert code == 0, err
        return json.loads(out)["version"]["id"]
    assert lin("tag", "release-1", "v001")[0] == 0
    assert target("release-1") == vs["v001_base"]["id"]
    code, _, err = lin("tag", "release-1", "v002")
    assert code == 6 and "never move" in err
    assert target("release-1") == vs["v001_base"]["id"]  # still there
    code, _, err = lin("tag", "v009_fake")
    assert code == 4 and err == "error: invalid tag name 'v009_fake': vNNN_ names are given by lin to new versions\n"
    assert "v009_fake" not in lin("tag")[1]  # nothing was written
    assert lin("branch", "experiment", "v001", "--switch")[0] == 0
    code, out, _ = lin("branch")
    assert "* experiment" in out
    assert target("experiment") == target("HEAD") == vs["v001_base"]["id"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "bad name", "x" * 101, "-dash", "v3"])
def test_invalid_names_exit_4(store_dir, lin, name):
    m = make_model_dir(store_dir / "m")
    code, _, err = lin("import", m, "--name", name)
    assert code == 4 and "invalid" in err
    assert not list((store_dir / ".lineage" / "refs" / "tags").iterdir())


def test_bad_input_messages(store_dir, lin):
    code, _, err = lin("import", store_dir / "missing", "--name", "x")
    assert code == 3 and "missing: no such folder" in err
    m = make_model_dir(store_dir / "m")
    (m / "optimizer.pt").write_bytes(b"pickle")
    code, _, err = lin("import", m, "--name", "x")
    assert code == 4 and "pickle" in err and "optimizer.pt" in err and "safetensors" in err
    code, _, err = lin("commit", m, "--name", "x", "--metric", "oops")
    assert code == 4 and "KEY=VALUE" in err


def test_outside_a_store_and_newer_format(tmp_path, monkeypatch, lin):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIN_STORE", raising=False)
    code, _, err = lin("log")
    assert code == 10 and "not inside a lineage store" in err and "lin init" in err
    lin("init")
    (tmp_path / ".lineage" / "format").write_text("99\n")
    code, _, err = lin("log")
    assert code == 10 and "newer" in err


def test_store_option_and_env(tmp_path, monkeypatch, lin):
    monkeypatch.chdir(tmp_path)
    assert lin("--store", tmp_path / "elsewhere", "init")[0] == 0
    assert (tmp_path / "elsewhere" / "format").exists()
    monkeypatch.setenv("LIN_STORE", str(tmp_path / "elsewhere"))
    code, out, _ = lin("log")
    assert code == 0 and "No versions yet" in out


def test_flipped_byte_is_reported_by_fsck_and_by_reads(two_versions, store_dir, lin):
    from lineagestore import Repo
    repo = Repo.open(store_dir / ".lineage")
    tf = [e for e in repo.objects.get(repo.commit(repo.resolve("v001")).tree, "tree").items()
          if e.name == "model.safetensors"][0]
    blob = repo.objects.get(tf.id, "tensor-file").entries()[0].id
    p = repo.objects.path_for(blob)
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    code, out, _ = lin("fsck")
    assert code == 1 and f"corrupt: object {blob}" in out
    code, out, _ = lin("fsck", "--json")
    assert json.loads(out)["ok"] is False
    code, _, err = lin("checkout", "v001", "--to", store_dir / "out")
    assert code == 5 and blob in err
    code, _, err = lin("diff", "v001", "v002")
    assert code == 5 and blob in err
    assert lin("checkout", "v002", "--to", store_dir / "out2")[0] == 0  # other versions unaffected


def test_fsck_clean(two_versions, lin):
    code, out, _ = lin("fsck")
    assert code == 0 and out.strip().endswith(": ok")


def test_console_script_runs(two_versions, store_dir):
    r = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", "log", "--json"], cwd=store_dir,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2


def test_checkout_keep_active_exports_without_moving_head(two_versions, store_dir, lin):
    a, _ = two_versions
    code, out, _ = lin("checkout", "v001", "--to", store_dir / "export", "--keep-active")
    assert code == 0 and "Active version unchanged: v002_tuned" in out
    assert (store_dir / "export" / "model.safetensors").read_bytes() == (a / "model.safetensors").read_bytes()
    code, out, _ = lin("status")
    assert "Active version: v002_tuned" in out and "on branch main" in out


def test_json_output_is_plain_json_whatever_it_holds(capsys):
    """Dataclasses, paths, sets, NaN and infinities: always valid JSON (NaN/inf become null)."""
    from dataclasses import dataclass
    from pathlib import Path

    from lineagestore.cli.output import Output

    @dataclass
    class Row:
        name: str
        loss: float
        where: Path
        tags: set

    Output(json_mode=True).json([Row("a", 0.5, Path("/x/y"), {"t"}), {"n": float("nan"), 3: float("inf")}])
    got = json.loads(capsys.readouterr().out)  # json.loads would accept NaN; check the text has none
    assert got == [{"name": "a", "loss": 0.5, "where": "/x/y", "tags": ["t"]}, {"n": None, "3": None}]
    Output(json_mode=True).json({"n": float("nan")})
    assert "NaN" not in capsys.readouterr().out
