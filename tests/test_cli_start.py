"""The CLI imports only the module of the command it runs; the table that says which is right."""

from __future__ import annotations

import subprocess
import sys

import typer

from lineagestore.cli import main as cli_main


def _top_level(app: typer.Typer) -> set[str]:
    return ({c.name for c in app.registered_commands}
            | {g.name or g.typer_instance.info.name for g in app.registered_groups})


def test_command_table_matches_what_each_module_registers():
    for mod in cli_main.MODULES:
        app = typer.Typer()
        __import__(f"lineagestore.cli.{mod}", fromlist=["register"]).register(app)
        names = _top_level(app)
        assert names, mod
        for name in names:
            assert cli_main.COMMANDS.get(name) == mod, f"lin {name} is defined in {mod}"
    everything = _top_level(cli_main.register())
    assert set(cli_main.COMMANDS) == everything


def test_command_module_skips_global_options():
    f = cli_main._command_module
    assert f(["commit", "model"]) == "versions_cmd"
    assert f(["-q", "--store", "x/.lineage", "gc", "--confirm"]) == "guard_cmd"
    assert f(["--store=x", "data", "add"]) == "data_cmd"
    assert f(["--help"]) is None
    assert f(["comit"]) is None
    assert f([]) is None


def _modules_loaded_by(args: list[str]) -> set[str]:
    code = (f"import sys; from lineagestore.cli.main import main; main({args!r}); "
            "print(' '.join(m for m in sys.modules if m.startswith(('lineagestore', 'pygit2', "
            "'pydantic', 'numpy', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_command_loads_only_what_it_needs(tmp_path):
    loaded = _modules_loaded_by(["--store", str(tmp_path / ".lineage"), "init"])
    assert "lineagestore.cli.versions_cmd" in loaded
    for heavy in ("lineagestore.cli.train_cmd", "lineagestore.cli.remote_cmd", "lineagestore.guard.fsck",
                  "pydantic", "numpy", "torch"):
        assert heavy not in loaded, heavy


def test_a_mistyped_command_still_gets_suggestions(capsys):
    assert cli_main.main(["chekout"]) == 2
    assert "checkout" in capsys.readouterr().err
