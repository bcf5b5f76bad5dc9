"""config.toml as typed settings: every key checked once, a bad value is one line naming the file
and the key (exit 4 from `lin`), an unknown key a warning; the defaults are the documented ones;
valid settings round-trip through the file; environment variables are read in one place."""

from __future__ import annotations

import ast
import math
import re
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_guard_helpers import run_lin

from lineagestore import Repo
from lineagestore.core import environment as E
from lineagestore.core import settings as S
from lineagestore.core.errors import InvalidInput
from lineagestore.core.settings import Config, Settings, TrainSettings

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "lineagestore"
DOCS = ROOT / "docs"


def write_config(store_dir: Path, text: str) -> Path:
    path = store_dir / ".lineage" / "config.toml"
    path.write_text(text)
    return path


# (config.toml text, the key the error names, what it says about the value)
BAD = [
    ('[gc]\ngrace_days = -1\n', "gc.grace_days = -1", "must be >= 0"),
    ('[gc]\ngrace_days = nan\n', "gc.grace_days = nan", "finite"),
    ('[gc]\ngrace_days = inf\n', "gc.grace_days = inf", "finite"),
    ('[gc]\ngrace_days = 0\n', "gc.grace_days = 0", "only accepted when given explicitly"),
    ('[gc]\ngrace_days = 0.01\n', "gc.grace_days = 0.01", "at least one hour"),
    ('[gc]\ngrace_days = "30m"\n', "gc.grace_days = '30m'", "at least one hour"),
    ('[gc]\ngrace_days = "soon"\n', "gc.grace_days = 'soon'", "duration"),
    ('[gc]\ngrace_days = true\n', "gc.grace_days = true", "not true/false"),
    ('[gc]\nreflog_expire_days = -3\n', "gc.reflog_expire_days = -3", "must be >= 0"),
    ('[gc]\nreflog_expire_days = -inf\n', "gc.reflog_expire_days = -inf", "finite"),
    ('[core]\ncompression = "lz4"\n', "core.compression = 'lz4'", "is not one of auto, zstd, none"),
    ('[core]\ncompression_level = 23\n', "core.compression_level = 23", "must be <= 22"),
    ('[core]\ncompression_level = "fast"\n', "core.compression_level = 'fast'", "must be a number"),
    ('[core]\nworkers = -1\n', "core.workers = -1", "must be >= 0"),
    ('[core]\nworkers = true\n', "core.workers = true", "not true/false"),
    ('[core]\nworkers = 2.5\n', "core.workers = 2.5", "whole number"),
    ('[core]\nlock_timeout = nan\n', "core.lock_timeout = nan", "finite"),
    ('[core]\nlock_timeout = -5\n', "core.lock_timeout = -5", "must be >= 0"),
    ('[core]\nwork_dir = 3\n', "core.work_dir = 3", "must be a string"),
    ('[core]\nwork_dir = ""\n', "core.work_dir = ''", "must not be empty"),
    ('core = 1\n', "core = 1", "must be a table"),
    ('[data]\noverlap_threshold = 1.5\n', "data.overlap_threshold = 1.5", "must be <= 1"),
    ('[data]\noverlap_threshold = -0.1\n', "data.overlap_threshold = -0.1", "must be >= 0"),
    ('[goal]\ntokens = 0\n', "goal.tokens = 0", "must be >= 1"),
    ('[goal]\ntokens = inf\n', "goal.tokens = inf", "finite"),
    ('[backup]\nremote = false\n', "backup.remote = false", "must be a string"),
    ('[train]\ndisk_margin = -0.5\n', "train.disk_margin = -0.5", "must be >= 0"),
    ('[train]\ncheckpoint_compression_level = 99\n', "train.checkpoint_compression_level = 99", "must be <= 22"),
    ('[train]\nlr = -1.0\n', "train.lr = -1.0", "must be > 0"),
    ('[train]\nlr = nan\n', "train.lr = nan", "finite"),
    ('[train]\nepochs = true\n', "train.epochs = true", "not true/false"),
    ('[train]\nbatch_size = 0\n', "train.batch_size = 0", "must be >= 1"),
    ('[train]\nprecision = "fp8"\n', "train.precision = 'fp8'", "is not one of auto, fp32, bf16, fp16"),
    ('[train]\nmax_grad_norm = inf\n', "train.max_grad_norm = inf", "finite"),
    ('[train]\nseed = -1\n', "train.seed = -1", "must be >= 0"),
    ('[train]\nfreeze = 3\n', "train.freeze = 3", "list of strings"),
    ('[remote.origin]\nurl = 5\n', "remote.origin.url = 5", "must be a string"),
    ('[remote.origin]\nurl = "s3://key:secret@bucket/x"\n', "remote.origin.url", "credentials"),
    ('[remote.origin]\nurl = "s3://bucket/x"\nendpoint_url = "ftp://host"\n', "remote.origin.endpoint_url", "http"),
    ('[remote."bad name"]\nurl = "/x"\n', "remote.bad name", "not a valid remote name"),
    ('[remote]\norigin = "s3://bucket"\n', "remote.origin = 's3://bucket'", "must be a table"),
]


@pytest.mark.parametrize("text,key,problem", BAD, ids=[b[1] for b in BAD])
def test_a_bad_value_is_one_line_naming_file_and_key(store_dir, text, key, problem):
    path = write_config(store_dir, text)
    with pytest.raises(InvalidInput) as e:
        Repo.open(store_dir / ".lineage")
    msg = str(e.value)
    assert "\n" not in msg and e.value.hint is None
    assert msg.startswith(f"{path}: {key}"), msg
    assert problem in msg, msg


@pytest.mark.parametrize("text,key,problem", [BAD[0], BAD[10], BAD[28]], ids=["grace", "compression", "train.lr"])
def test_lin_exits_4_with_the_one_line(store_dir, lin, text, key, problem):
    """docs/cli.md: exit 4 is invalid input; the message is the only line on stderr."""
    path = write_config(store_dir, text)
    code, out, err = lin("log")
    assert code == 4 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"error: {path}: {key} ") and problem in line


def test_lin_in_a_real_process(store_dir):
    path = write_config(store_dir, "[gc]\ngrace_days = -1\n")
    r = run_lin(store_dir / ".lineage", "status")
    assert r.returncode == 4
    assert r.stderr == f"error: {path}: gc.grace_days = -1 must be >= 0\n"


def test_unknown_keys_warn_once_and_are_kept(store_dir, lin):
    text = '[core]\nworkers = 2\ncolour = "blue"\n[gc]\ngrace = 3\n[extras]\nx = 1\n[train]\nbatch-size = 4\n'
    path = write_config(store_dir, text)
    repo = Repo.open(store_dir / ".lineage")
    assert repo.settings.core.workers == 2
    assert list(repo.settings.warnings) == [
        f"{path}: unknown key core.colour (ignored)",
        f"{path}: unknown key gc.grace (ignored)",
        f"{path}: unknown table [extras] (ignored)",
        f"{path}: unknown key train.batch-size (ignored)",
    ]
    code, _, err = lin("log")
    assert code == 0
    assert [ln for ln in err.splitlines() if ln.startswith("warning:")] == [f"warning: {w}" for w in repo.settings.warnings]
    # writing another key keeps what lin does not know
    repo.config.set("core.workers", 3)
    repo.save_config()
    again = tomllib.loads(path.read_text())
    assert again["core"] == {"workers": 3, "colour": "blue"} and again["extras"] == {"x": 1}


def test_set_refuses_a_bad_value_and_changes_nothing(repo):
    before = repo.config.dumps()
    for key, value in [("gc.grace_days", 0), ("gc.grace_days", "10m"), ("core.workers", -2),
                       ("core.compression", "lz4"), ("goal.tokens", math.nan), ("data.overlap_threshold", True)]:
        with pytest.raises(InvalidInput, match=re.escape(key)):
            repo.config.set(key, value)
    assert repo.config.dumps() == before and repo.settings == Settings()
    repo.config.set("gc.reflog_expire_days", 0)  # 0: reflog entries stop protecting at once
    assert repo.settings.gc.reflog_expire_s == 0


# ----------------------------------------------------------------------------- defaults and docs

def documented_config() -> dict:
    text = (DOCS / "format.md").read_text()
    block = text.split("## Config", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    block = re.sub(r"^\[remote\.NAME\]\n(?:(?!\[).*\n)*", "", block, flags=re.M)  # an example, not a default
    return tomllib.loads(block)


def test_defaults_are_the_documented_ones():
    doc = documented_config()
    got = Settings().to_toml(every_key=True)
    got.pop("remote")
    assert doc == got


def test_training_defaults_are_the_documented_ones():
    text = (DOCS / "training.md").read_text()
    rows = re.findall(r"^\| [^|]*\| `(\w+)` \| ([^|]+) \|", text, flags=re.M)
    documented = {name: cell.strip() for name, cell in rows if name in TrainSettings.names()}
    assert set(documented) == set(TrainSettings.names())
    default = TrainSettings()
    spelled = {"none": None, "on": True, "off": False, "CPU: on": None}
    for name, cell in documented.items():
        want = spelled.get(cell, cell)
        have = getattr(default, name)
        if name == "freeze":
            assert have == [] and cell == "none"
        elif isinstance(have, (int, float)) and not isinstance(have, bool):
            assert float(want) == have, name
        else:
            assert want == have, name


def test_the_batch_store_takes_its_level_from_the_settings(store_dir):
    repo = Repo.open(store_dir / ".lineage")
    assert repo.objects.batch().compression_level == repo.settings.core.compression_level == 1
    write_config(store_dir, "[core]\ncompression_level = 7\ncompression = \"zstd\"\n")
    repo = Repo.open(store_dir / ".lineage")
    b = repo.objects.batch()
    assert (b.compression_level, b.compression) == (7, "zstd")
    assert repo.objects.batch(repo.settings.train.checkpoint_compression_level).compression_level == -5


def test_existing_files_load_as_before(store_dir):
    """Forms older files use: durations as strings, floats for integers, strings in [train]."""
    write_config(store_dir, '[core]\nworkers = 4.0\nlock_timeout = 12.5\n[gc]\ngrace_days = "12h"\n'
                            'reflog_expire_days = "2w"\n[goal]\ntokens = 1e12\n[train]\nlr = "3e-5"\n'
                            'packing = "no"\nfreeze = "embed.*, lm_head.*"\n'
                            '[remote.nas]\nurl = "file:///mnt/nas"\n[remote.half]\nregion = "x"\n'
                            '[backup]\nremote = "nas"\n')
    s = Repo.open(store_dir / ".lineage").settings
    assert s.core.workers == 4 and isinstance(s.core.workers, int) and s.core.lock_timeout == 12.5
    assert s.gc.grace_s == 12 * 3600 and s.gc.reflog_expire_s == 14 * 86400
    assert s.goal.tokens == 10**12 and isinstance(s.goal.tokens, int)
    assert s.train.defaults == {"lr": 3e-5, "packing": False, "freeze": ["embed.*", "lm_head.*"]}
    assert TrainSettings.build(s.train.defaults).lr == 3e-5
    assert list(s.remotes) == ["nas"] and s.remotes["nas"].url == "file:///mnt/nas"
    assert s.warnings[-1].endswith("[remote.half] has no url (ignored)")


# ----------------------------------------------------------------------------- gc --grace

def test_grace_under_an_hour_is_refused_on_the_command_line(repo, lin):
    code, _, err = lin("gc", "--grace", "30m")
    assert code == 4 and "under an hour" in err
    assert lin("gc", "--grace", "1h")[0] == 0
    code, _, err = lin("gc", "--grace", "0")
    assert code == 0 and "warning: --grace 0" in err
    for bad, why in ((math.nan, "must be a finite number >= 0"), (math.inf, "must be a finite number >= 0"),
                     (-1, "must be a finite number >= 0"), (True, "use a number of days")):
        with pytest.raises(InvalidInput, match=f"^invalid duration {bad}: {why}"):
            S.parse_grace(bad)


# ----------------------------------------------------------------------------- round trip

names = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
texts = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters='"\\'), max_size=12)
finite = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
durations = st.one_of(st.floats(min_value=1 / 24, max_value=3650), st.integers(1, 3650),
                      st.tuples(st.integers(1, 500), st.sampled_from("hdw")).map(lambda t: f"{t[0]}{t[1]}"))
levels = st.integers(*S.ZSTD_LEVELS)
remotes = st.builds(S.RemoteSettings, url=st.one_of(names.map(lambda n: f"s3://bucket-{n}/p"), names.map(lambda n: f"/srv/{n}")),
                    endpoint_url=st.sampled_from(["", "http://localhost:9000", "https://s3.example.com"]),
                    region=st.sampled_from(["", "eu-west-1"]))
train_layers = st.fixed_dictionaries({}, optional={
    "lr": st.floats(min_value=1e-9, max_value=1.0), "epochs": st.integers(1, 50),
    "precision": st.sampled_from(S.PRECISIONS), "max_steps": st.integers(1, 10**6),
    "freeze": st.lists(texts, max_size=3), "packing": st.booleans(), "deterministic": st.booleans(),
    "adam_beta2": st.floats(min_value=0, max_value=0.999999), "seed": st.integers(0, 2**31)})

valid_settings = st.builds(
    Settings,
    core=st.builds(S.CoreSettings, work_dir=texts.filter(str.strip), compression=st.sampled_from(S.COMPRESSION_MODES),
                   compression_level=levels, lock_timeout=finite, workers=st.integers(0, 512)),
    gc=st.builds(S.GcSettings, grace_days=durations, reflog_expire_days=st.one_of(durations, st.just(0))),
    data=st.builds(S.DataSettings, overlap_threshold=st.floats(0, 1)),
    goal=st.builds(S.GoalSettings, tokens=st.integers(1, 10**15)),
    backup=st.builds(S.BackupSettings, remote=st.one_of(st.just(""), names)),
    train=st.builds(S.TrainTable, disk_margin=finite, checkpoint_compression_level=levels, defaults=train_layers),
    remotes=st.dictionaries(names, remotes, max_size=3),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=valid_settings)
def test_valid_settings_round_trip_through_the_file(tmp_path, s):
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(s.to_toml()))
    loaded = Config.load(path).settings
    assert loaded == s and loaded.warnings == ()
    assert Settings.from_toml(s.to_toml(every_key=True)) == s


# ----------------------------------------------------------------------------- environment

def environ_reads(path: Path) -> list[int]:
    """Lines that read os.environ or os.getenv. Passing the environment on to a child process
    (``{**os.environ, ...}``) and ``os.environ.setdefault`` for a library are not reads."""
    tree = ast.parse(path.read_text())
    not_reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            not_reads |= {id(v) for k, v in zip(node.keys, node.values, strict=True) if k is None}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault":
            not_reads.add(id(node.func.value))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name) and node.value.id == "os" and id(node) not in not_reads]


def test_the_environment_is_read_only_through_settings():
    allowed = {"core/environment.py"}
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in allowed:
            continue
        offenders += [f"lineagestore/{rel}:{ln}" for ln in environ_reads(path)]
    assert not offenders, "read the environment with core.environment.read_env:\n" + "\n".join(offenders)


def test_every_variable_named_in_the_package_is_listed():
    named = set()
    for path in PKG.rglob("*.py"):
        named |= set(re.findall(r"\b(LIN_[A-Z0-9_]+)\b", path.read_text()))  # AWS_*: botocore's own, mostly
    assert named <= set(E.ENVIRONMENT), named - set(E.ENVIRONMENT)
    with pytest.raises(KeyError):
        E.read_env("HOME")


def test_settings_are_read_from_the_typed_object_only():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(PKG.rglob("*.py")) if p.name != "settings.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bconfig\.(get|data)\b", line)]
    assert not offenders, offenders


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_bad_lock_timeout_in_the_environment_is_one_line(store_dir, lin, monkeypatch, value):
    monkeypatch.setenv("LIN_LOCK_TIMEOUT", value)
    code, _, err = lin("log")
    assert code == 4
    assert err == f"error: environment: LIN_LOCK_TIMEOUT={value!r} must be a finite number >= 0\n"
