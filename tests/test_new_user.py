"""What a new user tripped over (issue 11, item 11): each as the user met it, through `lin`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_model_dir
from test_train_support import train_assets  # noqa: F401 - the fixture

from lineagestore import Repo


def _names(lin) -> list[str]:
    code, out, _ = lin("log", "--all", "--json")
    assert code == 0
    return sorted(v["name"] for v in json.loads(out))


@pytest.fixture
def two(store_dir, lin):
    """v001_base (imported) and v002_tuned on main; nothing checked out yet."""
    a = make_model_dir(store_dir / "m1", seed=1)
    b = make_model_dir(store_dir / "m2", seed=2)
    assert lin("import", a, "--name", "base")[0] == 0
    assert lin("commit", b, "--name", "tuned")[0] == 0
    return a, b


# ----------------------------------------------------------------------------- status


def test_status_names_the_version_the_work_folder_holds(two, store_dir, lin):
    a, b = two
    assert lin("checkout", "main")[0] == 0  # the work folder holds v002_tuned
    # an export elsewhere makes v001 active; the work folder was not touched
    code, out, err = lin("checkout", "v001", "--to", store_dir / "export")
    assert code == 0, err
    code, out, _ = lin("status")
    work = store_dir / "model"
    assert code == 0
    assert f"Work folder {work}: at v002_tuned (HEAD is v001_base); `lin checkout v001_base` to update" in out
    assert "change" not in out and "modified" not in out
    code, out, _ = lin("status", "--json")
    st = json.loads(out)
    assert st["work"]["clean"] and st["work"]["changes"] == []
    assert st["work"]["holds"] == Repo.open(store_dir / ".lineage").resolve("v002")
    assert st["work"]["holds_name"] == "v002_tuned"
    code, out, _ = lin("status", "--to", store_dir / "export")
    assert f"Work folder {store_dir / 'export'}: matches v001_base" in out
    # like `lin train`: a new version on main while the work folder holds its parent
    assert lin("checkout", "main")[0] == 0
    c = make_model_dir(store_dir / "m3", seed=3)
    assert lin("commit", c, "--name", "trained")[0] == 0
    code, out, _ = lin("status")
    assert "at v002_tuned (HEAD is v003_trained); `lin checkout main` to update" in out
    # a change in the work folder is a change since the version it holds
    (work / "config.json").write_text("{}")
    code, out, _ = lin("status", "--json")
    st = json.loads(out)
    assert st["work"]["holds_name"] == "v002_tuned"
    assert st["work"]["changes"] == [{"path": "config.json", "change": "modified", "tensors": []}]
    code, out, _ = lin("status")
    assert f"Work folder {work}: 1 change(s) since v002_tuned (HEAD is v003_trained)" in out
    # the work folder committed: it holds HEAD again
    assert lin("commit", work, "--name", "edited")[0] == 0
    code, out, _ = lin("status")
    assert f"Work folder {work}: matches v004_edited" in out


# ----------------------------------------------------------------------------- doctor


def test_doctor_exits_0_with_a_current_backup_on_s3(two, lin, s3_bucket_url):
    code, out, _ = lin("doctor", "--json")
    assert code == 1 and {f["code"] for f in json.loads(out)["findings"] if f["level"] == "risk"} == {
        "no-backup", "same-disk"}
    assert lin("remote", "add", "s3", s3_bucket_url.url, "--backup")[0] == 0
    code, out, err = lin("backup")
    assert code == 0, err
    code, out, _ = lin("doctor", "--json")
    rep = json.loads(out)
    assert code == 0 and rep["ok"], rep
    # the default layout (store and work folder on one disk) is still said, as info
    assert [f["level"] for f in rep["findings"] if f["code"] == "same-disk"] == ["info"]


def test_doctor_warns_of_a_backup_folder_on_the_store_disk(two, store_dir, lin, tmp_path):
    assert lin("remote", "add", "nas", tmp_path / "backup", "--backup")[0] == 0
    assert lin("backup")[0] == 0
    code, out, _ = lin("doctor", "--json")
    risks = {f["code"]: f for f in json.loads(out)["findings"] if f["level"] == "risk"}
    assert code == 1 and set(risks) == {"backup-same-disk", "same-disk"}
    assert str(tmp_path / "backup") in risks["backup-same-disk"]["message"]
    if os.stat("/dev/shm").st_dev != os.stat(store_dir).st_dev:  # another filesystem: fine
        other = Path("/dev/shm") / f"lin-doctor-{os.getpid()}-{tmp_path.name}"
        try:
            assert lin("remote", "add", "shm", other)[0] == 0
            assert lin("backup", "--set", "shm")[0] == 0
            assert lin("doctor")[0] == 0
        finally:
            shutil.rmtree(other, ignore_errors=True)


# ----------------------------------------------------------------------------- every error is one line


def test_an_unexpected_error_is_one_line_and_a_bug_hint(two, lin, monkeypatch):
    import lineagestore.versions.history as H

    def broken(*_a, **_k):
        raise RuntimeError("boom\nsecond line of a third-party message")
    monkeypatch.setattr(H, "log", broken)
    code, out, err = lin("log")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "error: RuntimeError: boom second line of a third-party message",
        "hint: this is a bug in lin; LIN_DEBUG=1 shows the traceback (please report it)"]
    code, out, err = lin("log", "--json")
    assert code == 1 and json.loads(out)["type"] == "RuntimeError"
    monkeypatch.setenv("LIN_DEBUG", "1")
    code, out, err = lin("log")
    assert code == 1 and "Traceback (most recent call last)" in err and "in broken" in err
    assert err.splitlines()[-2:] == [
        "error: RuntimeError: boom second line of a third-party message",
        "hint: this is a bug in lin; LIN_DEBUG=1 shows the traceback (please report it)"]


def test_a_multi_line_message_prints_as_one_line(two, lin, monkeypatch):
    import lineagestore.versions.history as H
    from lineagestore.core.errors import InvalidInput

    def bad(*_a, **_k):
        raise InvalidInput("first\n  second\n\nthird", hint="do\nthis")
    monkeypatch.setattr(H, "log", bad)
    code, out, err = lin("log")
    assert code == 4 and err.splitlines() == ["error: first second third", "hint: do this"]


# ----------------------------------------------------------------------------- the empty commit


def test_a_commit_identical_to_its_parent_creates_nothing(two, store_dir, lin):
    a, b = two
    code, out, err = lin("commit", b, "--name", "again")
    assert code == 7 and out == ""
    assert err.splitlines()[0] == f"error: nothing to commit: {b} is identical to v002_tuned, its parent"
    assert "--allow-empty" in err
    assert _names(lin) == ["v001_base", "v002_tuned"]
    repo = Repo.open(store_dir / ".lineage")
    assert repo.name_of(repo.head()) == "v002_tuned"
    code, out, err = lin("commit", b, "--name", "again", "--allow-empty")
    assert code == 0 and "Committed v003_again" in out
    # the same through the library, with an explicit parent
    from lineagestore.core.errors import NothingToCommit
    with pytest.raises(NothingToCommit, match=f"^nothing to commit: {a} is identical to v001_\\w+, its parent$"):
        repo.commit_folder(a, "back", parents=[repo.resolve("v001")])
    res = repo.commit_folder(a, "back", parents=[repo.resolve("v001")], allow_empty=True)
    assert res.name == "v004_back" and res.tree == repo.commit(repo.resolve("v001")).tree
    with pytest.raises(NothingToCommit):  # HEAD is now v004_back, which holds a
        repo.commit_folder(a, "forward")
    assert _names(lin) == ["v001_base", "v002_tuned", "v003_again", "v004_back"]


# ----------------------------------------------------------------------------- log, verify, clone, help


def test_log_graph_shows_lines_whose_names_were_removed(two, store_dir, lin):
    assert lin("branch", "exp", "v001", "--switch")[0] == 0
    c = make_model_dir(store_dir / "m3", seed=3)
    assert lin("commit", c, "--name", "side")[0] == 0
    assert lin("checkout", "main")[0] == 0
    code, out, err = lin("rm", "v003_side", "--force", "--confirm-lineage", "--confirm-name", "v003_side")
    assert code == 0, err
    code, out, _ = lin("log", "--graph")
    lines = out.splitlines()
    assert lines[0].startswith("* v001_base")
    assert any(l.startswith("├─* v002_tuned") and "HEAD -> main" in l for l in lines)
    assert any(l.startswith("└─* v003_side") and "name removed" in l and "exp" in l for l in lines), out
    code, out, _ = lin("log", "--all", "--json")
    assert [v["name"] for v in json.loads(out) if v["name_removed"]] == ["v003_side"]


def test_verify_takes_the_remote_as_its_argument(two, lin, tmp_path):
    assert lin("remote", "add", "origin", tmp_path / "rem")[0] == 0
    assert lin("remote", "add", "other", tmp_path / "rem2")[0] == 0
    assert lin("push", "origin")[0] == 0
    code, out, err = lin("verify", "origin")
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"verify origin ({tmp_path / 'rem'}): ") and out.rstrip().endswith(": ok")
    code, out, _ = lin("verify", "--remote", "origin")
    assert code == 0 and out.splitlines()[-1].startswith("verify origin")
    code, out, _ = lin("verify", "other")  # nothing pushed there
    assert code == 1 and out.splitlines()[-2].startswith(f"verify other ({tmp_path / 'rem2'})")
    assert "not a lineage remote" in out
    code, _, err = lin("verify", "origin", "--remote", "other")
    assert code == 2 and "twice" in err


def test_clone_resolves_a_relative_path_from_here(two, store_dir, lin, tmp_path, monkeypatch):
    assert lin("remote", "add", "origin", tmp_path / "rem")[0] == 0
    assert lin("push", "origin")[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = lin("clone", "rem", elsewhere / "copy")
    assert code == 0, err
    clone = Repo.open(elsewhere / "copy" / ".lineage")
    assert clone.settings.remotes["origin"].url == str(tmp_path / "rem")
    assert list(clone.versions()) == ["v001_base", "v002_tuned"]


def _listed(text: str) -> dict[str, str]:
    """The command list of a --help text: {name: description, wrapped lines joined}."""
    lines = text.split("Commands:\n", 1)[1].splitlines()
    out: dict[str, str] = {}
    last = None
    for line in lines:
        if not line.strip():
            break
        if line.startswith("  ") and not line.startswith("   "):
            name, _, desc = line.strip().partition(" ")
            out[name] = desc.strip()
            last = name
        elif last is not None:
            out[last] += " " + line.strip()
    return out


@pytest.mark.parametrize("group", [[], ["data"], ["runs"], ["remote"]])
def test_help_lists_whole_descriptions(group, lin, monkeypatch):
    from lineagestore.cli.main import register
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = lin(*group, "--help")
    assert code == 0
    listed = _listed(out)
    cmd = typer_command(register())
    for g in group:
        cmd = cmd.commands[g]
    assert set(listed) == set(cmd.commands)
    for name, desc in listed.items():
        full = cmd.commands[name].help or ""
        first = full.split("\n\n")[0]
        assert desc == " ".join(first.split()), (name, desc)
        assert not desc.endswith("..."), name
        assert len(desc) <= 66, f"{name}: the first line of its docstring is long: {desc!r}"


def typer_command(app):
    import typer
    return typer.main.get_command(app)


def test_lin_help_in_a_real_process():
    p = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "80"})
    assert p.returncode == 0 and "..." not in p.stdout.split("Commands:", 1)[1]


# ----------------------------------------------------------------------------- training


def _store_with_broken_tokenizer(tmp_path, train_assets) -> Path:  # noqa: F811
    """A store whose base model's tokenizer.json names a model type the tokenizers library lacks
    (it raises a bare ``Exception``)."""
    base = tmp_path / "base"
    shutil.copytree(train_assets / "base", base)
    doc = json.loads((base / "tokenizer.json").read_text())
    doc["model"] = {"type": "NoSuchModel"}
    (base / "tokenizer.json").write_text(json.dumps(doc))
    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copy(train_assets / "bible.jsonl", folder / "bible.jsonl")
    Repo.init(folder / ".lineage").import_model(base, "base")
    return folder


def test_a_tokenizer_that_cannot_load_is_one_line(tmp_path, train_assets):  # noqa: F811
    from test_train_support import TRAIN_ARGS, lin_proc
    folder = _store_with_broken_tokenizer(tmp_path, train_assets)
    for cmd in (["plan"], ["train", "--yes", "--no-measure"]):  # a failed pre-flight check, one line
        p = lin_proc(folder, *cmd, "--data", "bible.jsonl", "--name", "bible", *TRAIN_ARGS)
        assert p.returncode == 1 and p.stderr == "", p.stderr
        (check,) = [line for line in p.stdout.splitlines() if line.startswith("  ✗")]
        assert check.startswith("  ✗ 2. base model exists and verifies: the base model has no usable tokenizer: "
                                "Exception: data did not match any variant of untagged enum ModelUntagged")
    assert list(Repo.open(folder / ".lineage").versions()) == ["v001_base"]
    p = lin_proc(folder, "data", "add", "bible.jsonl")
    assert p.returncode == 4 and p.stderr.splitlines()[0].startswith(
        "error: cannot load the tokenizer of v001_base: Exception: data did not match"), p.stderr


def test_train_without_a_terminal_refuses_before_planning(tmp_path, train_assets):  # noqa: F811
    from test_train_support import TRAIN_ARGS, lin_proc, new_store
    folder = new_store(tmp_path / "w", train_assets)
    p = lin_proc(folder, "train", "--data", "bible.jsonl", "--name", "bible", *TRAIN_ARGS)
    assert p.returncode == 7 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "error: lin train asks before it trains, and this is not a terminal: nothing was planned or trained",
        "hint: pass --yes to train without asking (`lin plan` shows the plan first)"]
    repo = Repo.open(folder / ".lineage")
    assert repo.refs.names("refs/data/") == [] and repo.refs.names("refs/runs/") == []
    assert not (folder / ".lineage" / "audit.log").exists() or "train" not in (
        folder / ".lineage" / "audit.log").read_text()


def test_status_of_a_work_folder_imported_then_trained_on(store_dir, lin):
    """The work folder itself imported (no checkout ever wrote it), then HEAD moves on (as
    `lin train` moves it): the folder still holds the imported version."""
    work = make_model_dir(store_dir / "model", seed=1)  # the default work folder
    old = 1_600_000_000
    for p in work.iterdir():
        os.utime(p, (old, old))  # files older than the commit: the stat cache vouches for them
    assert lin("import", work, "--name", "base")[0] == 0
    code, out, _ = lin("status")
    assert f"Work folder {work}: matches v001_base" in out
    assert lin("commit", make_model_dir(store_dir / "trained", seed=2), "--name", "trained")[0] == 0
    code, out, _ = lin("status")
    assert f"Work folder {work}: at v001_base (HEAD is v002_trained); `lin checkout main` to update" in out
    # a file changed since the import is a change since v001_base, and checkout keeps it
    (work / "config.json").write_text('{"edited": true}')
    code, out, _ = lin("status")
    assert f"Work folder {work}: 1 change(s) since v001_base (HEAD is v002_trained)" in out
    assert "modified  config.json" in out
    code, _, err = lin("checkout", "main")
    assert code == 7 and "config.json" in err
    # unchanged files of the imported version are replaced without --force
    (work / "config.json").write_text(json.dumps({"model_type": "toy", "layers": 3}))
    code, out, err = lin("checkout", "main")
    assert code == 0, err
    code, out, _ = lin("status")
    assert f"Work folder {work}: matches v002_trained" in out
