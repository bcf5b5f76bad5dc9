#!/usr/bin/env python
"""Crash safety: SIGKILL real `lin` processes at random points and check that nothing is lost.

Each round runs one command as a subprocess (`lin commit`, `lin checkout`, `lin gc --confirm`,
`lin gc --confirm --empty-trash`, `lin data add` when that command exists; `lin push`, `lin fetch`,
`lin pull` and `lin clone` with a folder remote) on a small store and kills it with SIGKILL,
either at the N-th kill point of its write path (LIN_TEST_KILL_AT=any:N: before/after every atomic
rename, in the store and in the folder remote, after every reflog/audit append, between gc's
moves) or after a random delay. After every round:

- `lin fsck --full` exits 0 (every byte re-hashed; refs, reflogs, links, audit chain);
- every version committed before reads back byte-exact, and HEAD names one of them;
- a killed commit is either absent (no name) or complete (its name reads back byte-exact);
- objects a killed gc moved come back with `lin restore NAME`;
- after a killed checkout, a plain `lin checkout` (no --force) completes the work folder;
- the next successful command leaves no temp files or lock records of killed processes;
- after a killed push, fetch, pull or clone: the store it wrote passes `fsck --full` and every
  version it names reads back as pushed, the remote passes `verify --full`, and the command run
  again completes (a clone killed once its store was whole leaves `DIR/.lineage` complete: its
  checkout is finished with `lin checkout HEAD`, as the clone's error says); a pull leaves the
  work folder holding the version pulled, a clone every version pushed.

Usage: python benchmarks/crash.py [--kills 500] [--seed 1] [--jobs 2] [--keep DIR]
                                  [--scenarios commit,checkout,...]
       python benchmarks/crash.py --scenarios run [--kills 200]   (`lin run`: benchmarks/crash_run.py)
       python benchmarks/crash.py --scenarios repack [--kills 100]   (`lin repack`: benchmarks/crash_repack.py)
Prints one JSON line per lab and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lineagestore.api import Repo as ApiRepo  # noqa: E402
from lineagestore.core.fsutil import pid_alive  # noqa: E402
from lineagestore.core.names import parse_version  # noqa: E402
from lineagestore.core.repo import Repo  # noqa: E402
from lineagestore.guard import fsck  # noqa: E402
from lineagestore.guard.protect import descendants  # noqa: E402
from lineagestore.remote.check import verify as verify_remote  # noqa: E402
from lineagestore.versions.folder import TMP_PREFIX  # noqa: E402
from lineagestore.versions.materialize import iter_file_bytes  # noqa: E402
from lineagestore.versions.models import walk_tree  # noqa: E402

REMOTE_SCENARIOS = ("push", "fetch", "pull", "clone")
SCENARIOS = ("commit", "checkout", "gc", "gc-empty", "data-add", *REMOTE_SCENARIOS)
#: how often each scenario is drawn
WEIGHTS = {"commit": 2, "checkout": 1, "gc": 2, "gc-empty": 1, "data-add": 1,
           "push": 1, "fetch": 1, "pull": 1, "clone": 1}


class CrashCheckFailed(AssertionError):
    pass


@dataclass
class Run:
    rc: int
    out: str
    err: str
    killed: bool
    spec: str


def digest_folder(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(TMP_PREFIX):
            out[p.relative_to(folder).as_posix()] = blake3.blake3(p.read_bytes()).hexdigest()
    return out


def data_add_available() -> bool:
    return (ROOT / "lineagestore" / "cli" / "data_cmd.py").is_file()


@dataclass
class Lab:
    """One store, its expected content, and the rounds run against it."""

    root: Path
    seed: int = 0
    rng: random.Random = field(init=False)
    expected: dict[str, dict[str, str]] = field(default_factory=dict)  # version -> {path: digest}
    data: dict[str, str] = field(default_factory=dict)  # data file name -> digest of its bytes
    stats: Counter = field(default_factory=Counter)
    max_point: dict[str, int] = field(default_factory=dict)
    duration: dict[str, float] = field(default_factory=dict)  # seconds a command takes, unkilled
    model_n: int = 0
    cli_every: int = 10  # every N-th check runs the real `lin fsck --full` / `lin verify --full`
    scenarios: tuple[str, ...] = SCENARIOS
    delay_share: float = 0.2  # rounds killed at a random moment rather than at a kill point
    on_remote: dict[str, dict[str, str]] = field(default_factory=dict)  # version -> digest, pushed

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.store = self.root / ".lineage"
        self.work = self.root / "model"
        self.src = self.root / "src"
        self.src.mkdir(parents=True, exist_ok=True)
        self.remote = self.root / "remote"  # a folder remote: its writes pass kill points too
        self.peer = self.root / "peer"  # a clone of it that fetches and pulls

    # ------------------------------------------------------------------ running lin

    def env(self, store: Path | None = None, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIN_TEST_")}
        env.update(LIN_STORE=str(store or self.store), LIN_NO_PROGRESS="1", LIN_LOCK_TIMEOUT="60",
                   PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        env.update(extra)
        return env

    def lin(self, *args: str, kill_at: str | None = None, kill_after: float | None = None,
            check: bool = True, store: Path | None = None) -> Run:
        env = self.env(store, **({"LIN_TEST_KILL_AT": kill_at} if kill_at else {}))
        cmd = [sys.executable, "-m", "lineagestore.cli.main", *args]
        p = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True)
        if kill_after is not None:
            try:
                p.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=300)
        killed = p.returncode == -signal.SIGKILL
        spec = kill_at or (f"after {kill_after:.2f}s" if kill_after is not None else "none")
        if check and not killed and p.returncode != 0:
            raise CrashCheckFailed(f"`lin {' '.join(args)}` ({spec}) exited {p.returncode}: {err.strip()[-800:]}")
        return Run(p.returncode, out, err, killed, spec)

    def killing(self, scenario: str, *args: str, store: Path | None = None, at: str | None = None) -> Run:
        """Run ``args`` with a kill at a random kill point (most rounds) or a random moment
        (or at the kill point ``at``, e.g. ``clone-rename:1``).

        The number of kill points a command passes is learnt as rounds go: a run that ends
        before its N-th point bounds it; one killed near the bound doubles it (a clone passes
        hundreds of points, and its last ones must be reached too).
        """
        top = self.max_point.setdefault(scenario, 30)
        if at is not None:
            r = self.lin(*args, kill_at=at, store=store)
        elif self.rng.random() < 1 - self.delay_share:
            n = self.rng.randint(1, top)
            t0 = time.monotonic()
            r = self.lin(*args, kill_at=f"any:{n}", store=store)
            self.max_point[scenario] = (2 * top if n > 0.9 * top else top) if r.killed else max(2, n - 1)
            if not r.killed:  # how long the command takes when it runs to the end
                self.duration[scenario] = time.monotonic() - t0
        else:
            # a random moment within the command's usual run time (commands got fast: a fixed
            # 0.2-0.6 s delay came after most of them had finished)
            r = self.lin(*args, kill_after=self.rng.uniform(0.1, 0.95) * self.duration.get(scenario, 0.4),
                         store=store)
        self.stats["rounds"] += 1
        self.stats[f"{scenario} rounds"] += 1
        if r.killed:
            self.stats["kills"] += 1
            self.stats[f"{scenario} kills"] += 1
            self.stats["kills after a random delay" if r.spec.startswith("after") else "kills at a kill point"] += 1
        return r

    # ------------------------------------------------------------------ content

    def new_model(self) -> Path:
        """A model folder that differs from the last one in two tensors (the rest dedupes)."""
        self.model_n += 1
        folder = self.src / f"m{self.model_n}"
        rng = np.random.default_rng(self.seed * 100_000 + self.model_n)
        base = np.random.default_rng(self.seed)
        tensors = {f"layers.{i}.weight": base.standard_normal((48, 64)).astype(np.float32) for i in range(3)}
        tensors[f"layers.{self.model_n % 3}.weight"] = rng.standard_normal((48, 64)).astype(np.float32)
        tensors["head.bias"] = np.full((64,), self.model_n, dtype=np.float16)
        # > 1 MiB and new in every model: stored raw by an in-kernel copy, checked out the same way
        tensors["embed.weight"] = rng.standard_normal((600, 512)).astype(np.float32)
        folder.mkdir()
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps({"model_type": "toy", "n": self.model_n}))
        return folder

    def repo(self) -> Repo:
        return Repo.open(self.store)

    def read_version(self, repo: Repo, name: str) -> dict[str, str]:
        cid = repo.refs.resolve(f"refs/tags/{name}")
        if cid is None:
            raise CrashCheckFailed(f"version {name} lost its name")
        tree = repo.commit(cid).tree
        return {f.path: blake3.blake3(b"".join(iter_file_bytes(repo.objects, f))).hexdigest()
                for f in walk_tree(repo.objects, tree)}

    # ------------------------------------------------------------------ setup, checks

    def setup(self) -> None:
        self.lin("init")
        with open(self.store / "config.toml", "a") as f:
            f.write("[gc]\nreflog_expire_days = 0\n")  # removed names are collectable at once
        first = self.new_model()
        self.lin("import", str(first), "--name", "base")
        self.expected["v001_base"] = digest_folder(first)
        for _ in range(2):
            self.commit_plain()
        if set(self.scenarios) & set(REMOTE_SCENARIOS):
            self.lin("remote", "add", "origin", str(self.remote))
            self.push_plain()
            self.lin("clone", str(self.remote), str(self.peer))

    def commit_plain(self) -> str:
        folder = self.new_model()
        r = self.lin("commit", str(folder), "--name", f"c{self.model_n}", "--json")
        name = json.loads(r.out)["name"]
        self.expected[name] = digest_folder(folder)
        shutil.rmtree(folder)
        return name

    def leftovers(self, store: Path | None = None) -> list[str]:
        """Temp files and store-lock records of dead processes (every writer takes the store lock;
        records of the refs and audit locks go when those locks are next taken)."""
        store = store or self.store
        out = []
        for p in (store / "tmp").iterdir():
            try:
                pid = int(p.name.split("-", 1)[0])
            except ValueError:
                pid = -1
            if not pid_alive(pid):
                out.append(f"tmp/{p.name}")
        for p in (store / "locks").glob("store.lock.holders/*.json"):
            if not pid_alive(int(p.name.split("-", 1)[0])):
                out.append(str(p.relative_to(store)))
        return out

    def verify(self, after: str) -> None:
        """The checks after every round. fsck runs in-process (the code of `lin fsck --full`);
        every ``cli_every``-th time through the real command."""
        self.stats["checks"] += 1
        if self.stats["checks"] % self.cli_every == 0:
            r = self.lin("fsck", "--full", "--json", check=False)
            if r.rc != 0:
                raise CrashCheckFailed(f"lin fsck after {after} exited {r.rc}:\n{r.out[-3000:]}\n{r.err[-1000:]}")
            rep = json.loads(r.out)
            notes = rep["notes"]
            self.stats["checks through `lin fsck --full`"] += 1
        else:
            rep = fsck.check(self.repo(), quick=False)
            if not rep.ok:
                raise CrashCheckFailed(f"fsck --full after {after}: "
                                       + "; ".join(p.message for p in rep.problems[:5]))
            notes = rep.notes
        self.stats["leftover notes seen by fsck"] += len(notes)
        self.stats["version reads (byte-exact)"] += len(self.expected)
        repo = self.repo()
        for name, want in self.expected.items():
            got = self.read_version(repo, name)
            if got != want:
                raise CrashCheckFailed(f"after {after}: version {name} reads back different bytes")
        head = repo.head()
        names = {repo.refs.resolve(f"refs/tags/{n}") for n in self.expected}
        if head not in names:
            raise CrashCheckFailed(f"after {after}: HEAD ({head}) is not one of the versions")

    def assert_recovered(self, what: str, store: Path | None = None) -> None:
        left = self.leftovers(store)
        if left:
            raise CrashCheckFailed(f"after a successful {what}, leftovers of killed commands remain: {left[:5]}")

    # ------------------------------------------------------------------ scenarios

    def round_commit(self) -> None:
        folder = self.new_model()
        slug = f"c{self.model_n}"
        r = self.killing("commit", "commit", str(folder), "--name", slug)
        repo = self.repo()
        landed = [n for n in repo.versions() if (parse_version(n) or (0, ""))[1] == slug]
        if landed:  # complete: named, and every byte there
            if self.read_version(repo, landed[0]) != digest_folder(folder):
                raise CrashCheckFailed(f"half-written commit {landed[0]} ({r.spec}) is named but incomplete")
            self.expected[landed[0]] = digest_folder(folder)
            self.stats["killed commits complete" if r.killed else "commits completed"] += 1
        else:
            if not r.killed:
                raise CrashCheckFailed(f"commit {slug} exited 0 but its version is missing")
            self.stats["killed commits absent"] += 1
        if not r.killed:
            self.assert_recovered("commit")
        shutil.rmtree(folder)
        self.verify(f"commit ({r.spec})")

    def round_checkout(self) -> None:
        name = self.rng.choice(sorted(self.expected))
        r = self.killing("checkout", "checkout", name)
        self.verify(f"checkout {name} ({r.spec})")
        self.lin("checkout", name)  # no --force: a killed checkout never leaves "conflicts"
        got = digest_folder(self.work)
        if got != self.expected[name] or any(p.name.startswith(TMP_PREFIX) for p in self.work.rglob("*")):
            raise CrashCheckFailed(f"work folder after re-running checkout {name} differs or has temp files")
        self.assert_recovered("checkout")

    def _victim(self) -> str:
        """Remove the name of a leaf version that is not active (making one if there is none)."""
        repo = ApiRepo.open(self.store)
        head = repo.head()
        leaves = [n for n in self.expected if n != "v001_base" and n not in self.on_remote  # numbers stay unique there
                  and repo.refs.resolve(f"refs/tags/{n}") != head
                  and not descendants(repo, repo.refs.resolve(f"refs/tags/{n}"))]
        if not leaves:
            folder = self.new_model()
            res = repo.commit_folder(folder, f"c{self.model_n}", activate=False)
            self.expected[res.name] = digest_folder(folder)
            shutil.rmtree(folder)
            leaves = [res.name]
        victim = self.rng.choice(sorted(leaves))
        repo.rm(victim, force=True, confirm_lineage=True, confirm_name=victim)
        return victim

    def round_gc(self, empty: bool) -> None:
        victim = self._victim()
        want = self.expected.pop(victim)
        args = ["gc", "--confirm", "--grace", "0"] + (["--empty-trash"] if empty else [])
        r = self.killing("gc-empty" if empty else "gc", *args)
        self.verify(f"{' '.join(args)} ({r.spec})")
        if empty:
            return  # the victim may be gone for good: that is what --empty-trash is for
        ApiRepo.open(self.store).restore(victim)  # the code of `lin restore NAME`
        if self.read_version(self.repo(), victim) != want:
            raise CrashCheckFailed(f"{victim} restored after a killed gc ({r.spec}) reads back different bytes")
        self.expected[victim] = want
        self.stats["restored after killed gc"] += 1
        self.verify(f"restore {victim}")

    def round_data_add(self) -> None:
        path = self.src / f"data{self.stats['rounds']}.jsonl"
        rng = random.Random(self.rng.random())
        with open(path, "w") as f:
            for i in range(rng.randint(50, 400)):
                f.write(json.dumps({"text": f"record {i} {rng.random()}"}) + "\n")
        r = self.killing("data-add", "data", "add", str(path), "--no-tokens")
        self.verify(f"data add ({r.spec})")
        self.data[path.name] = blake3.blake3(path.read_bytes()).hexdigest()
        repo = self.repo()
        for oid in repo.refs.as_dict("refs/data/").values():  # present: complete, byte for byte
            ds = repo.objects.get(oid, "dataset")
            if ds.stored and ds.filename in self.data:
                if blake3.blake3(repo.objects.read_content(ds.content)).hexdigest() != self.data[ds.filename]:
                    raise CrashCheckFailed(f"registered data {ds.filename} reads back different bytes")
        if not r.killed and path.name not in {repo.objects.get(o, "dataset").filename
                                              for o in repo.refs.as_dict("refs/data/").values()}:
            raise CrashCheckFailed(f"`lin data add {path.name}` exited 0 but the file is not registered")

    # ------------------------------------------------------------------ remotes

    def push_plain(self) -> None:
        self.lin("push")
        self.on_remote.update(self.expected)  # a push sends every version this store names

    def verify_remote(self, after: str) -> None:
        """The remote holds every object of every ref it has, each re-hashed (`verify --full`)."""
        self.stats["remote checks (verify --full)"] += 1
        if self.stats["remote checks (verify --full)"] % self.cli_every == 0:
            r = self.lin("verify", "--remote", "origin", "--full", check=False)
            if r.rc != 0:
                raise CrashCheckFailed(f"lin verify --full after {after} exited {r.rc}:\n{r.out[-2000:]}")
            self.stats["remote checks through `lin verify --full`"] += 1
        else:
            res = verify_remote(self.repo(), "origin", full=True)
            if not res.ok:
                raise CrashCheckFailed(f"verify --full of the remote after {after}: {res.missing[:3]} "
                                       f"{res.corrupt[:3]} {res.bad_refs[:3]}")

    def check_store(self, store: Path, after: str) -> Repo:
        """A store filled from the remote: `fsck --full` is clean; each version it names reads back
        as it was pushed."""
        repo = Repo.open(store)
        rep = fsck.check(repo, quick=False)
        if not rep.ok:
            raise CrashCheckFailed(f"fsck --full of {store} after {after}: "
                                   + "; ".join(p.message for p in rep.problems[:5]))
        for name in repo.versions():
            if name not in self.on_remote or self.read_version(repo, name) != self.on_remote[name]:
                raise CrashCheckFailed(f"after {after}: {store} holds {name}, which reads back different bytes")
        self.stats["version reads (byte-exact)"] += len(repo.versions())
        return repo

    def round_push(self) -> None:
        self.commit_plain()
        r = self.killing("push", "push")
        self.verify(f"push ({r.spec})")
        self.verify_remote(f"push ({r.spec})")
        self.push_plain()  # run again: completes
        self.verify_remote("push run again")
        self.assert_recovered("push")

    def round_fetch(self, kind: str) -> None:
        """A new version on the remote, then `lin fetch` or `lin pull` of the peer, killed."""
        self.commit_plain()
        self.push_plain()
        store = self.peer / ".lineage"
        r = self.killing(kind, kind, store=store)
        self.check_store(store, f"{kind} ({r.spec})")
        self.verify_remote(f"{kind} ({r.spec})")
        self.lin(kind, store=store)  # run again: completes
        repo = self.check_store(store, f"{kind} run again")
        self.assert_recovered(kind, store)
        main = self.repo().refs.resolve("refs/heads/main")  # what the remote's main is now
        if kind == "fetch" and repo.refs.read("refs/remotes/origin/heads/main") != main:
            raise CrashCheckFailed(f"fetch run again after a kill ({r.spec}) did not see main at {main}")
        if kind == "pull":
            name = repo.name_of(main) if repo.objects.has(main) else None
            if name not in repo.versions() or repo.head() != main:
                raise CrashCheckFailed(f"pull run again after a kill ({r.spec}) did not take main ({main})")
            if digest_folder(self.peer / "model") != self.on_remote[name]:
                raise CrashCheckFailed(f"pull run again after a kill ({r.spec}): the work folder is not {name}")

    def round_clone(self) -> None:
        dest = self.root / f"clone{self.stats['rounds']}"
        if self.rng.random() < 0.5:
            dest.mkdir()  # an existing folder (recovery after rm -rf .lineage)
        # one round in five just before the whole store is renamed into place
        at = "clone-rename:1" if self.rng.random() < 0.2 else None
        r = self.killing("clone", "clone", str(self.remote), str(dest), at=at)
        store = dest / ".lineage"
        if store.exists():  # the store was whole: only the work folder was being written
            if set(self.check_store(store, f"clone ({r.spec})").versions()) != set(self.on_remote):
                raise CrashCheckFailed(f"a clone killed after its store was named ({r.spec}) lacks versions")
            if r.killed:
                self.lin("checkout", "HEAD", store=store)  # what the clone's error says to do
                self.stats["killed clones complete (checkout finished)"] += 1
        else:
            self.stats["killed clones absent"] += 1
            self.lin("clone", str(self.remote), str(dest))  # run again: completes
        repo = self.check_store(store, f"clone ({r.spec}) run again")
        if set(repo.versions()) != set(self.on_remote):
            raise CrashCheckFailed(f"clone run again after a kill ({r.spec}) lacks versions")
        head = repo.name_of(repo.head())
        if head is None or digest_folder(dest / "model") != self.on_remote[head]:
            raise CrashCheckFailed(f"clone after a kill ({r.spec}): the work folder is not {head}")
        left = [p.name for p in dest.iterdir() if p.name.startswith(".lineage") and p.name != ".lineage"]
        if left:
            raise CrashCheckFailed(f"clone run again after a kill ({r.spec}) left {left}")
        self.verify_remote(f"clone ({r.spec})")
        shutil.rmtree(dest, onerror=_writable_again)

    def round(self) -> None:
        choices = [s for s in self.scenarios if s != "data-add" or data_add_available()]
        kind = self.rng.choices(choices, [WEIGHTS[s] for s in choices])[0]
        if kind == "commit":
            self.round_commit()
        elif kind == "checkout":
            self.round_checkout()
        elif kind == "data-add":
            self.round_data_add()
        elif kind == "push":
            self.round_push()
        elif kind in ("fetch", "pull"):
            self.round_fetch(kind)
        elif kind == "clone":
            self.round_clone()
        else:
            self.round_gc(empty=kind == "gc-empty")

    def final_check(self) -> None:
        """Every version through the real CLI: `lin checkout NAME --to DIR`, compared byte for byte."""
        for name, want in self.expected.items():
            dest = self.root / "final" / name
            self.lin("checkout", name, "--to", str(dest))
            if digest_folder(dest) != want:
                raise CrashCheckFailed(f"final checkout of {name} differs")
        self.stats["versions at the end"] = len(self.expected)


def _writable_again(func, path, _exc) -> None:
    """rmtree's error handler for read-only object folders."""
    os.chmod(os.path.dirname(path), 0o755)
    func(path)


def run_lab(root: Path, seed: int, kills: int, max_rounds: int | None = None,
            scenarios: tuple[str, ...] = SCENARIOS) -> dict:
    lab = Lab(root, seed, scenarios=scenarios)
    lab.setup()
    rounds = 0
    t0 = time.monotonic()
    while lab.stats["kills"] < kills and (max_rounds is None or rounds < max_rounds):
        lab.round()
        rounds += 1
    lab.final_check()
    return {"seed": seed, "seconds": round(time.monotonic() - t0, 1), **dict(lab.stats)}


def _lab_entry(args: tuple) -> dict:
    root, seed, kills, scenarios = args
    try:
        return run_lab(Path(root), seed, kills, scenarios=scenarios)
    except CrashCheckFailed as e:
        return {"seed": seed, "failed": str(e)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=500, help="total SIGKILLs across labs (default 500)")
    ap.add_argument("--jobs", type=int, default=2, help="labs run in parallel (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep the labs in this folder")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all)")
    a = ap.parse_args()
    scenarios = tuple(x.strip() for x in a.scenarios.split(",") if x.strip())
    if scenarios == ("run",):  # `lin run` needs its own store (a tiny LM, a queue): benchmarks/crash_run.py
        import crash_run
        return crash_run.main(["--kills", str(a.kills), "--seed", str(a.seed)]
                              + (["--keep", str(a.keep)] if a.keep else []))
    if scenarios == ("repack",):  # a lineage of bf16 versions, packed: benchmarks/crash_repack.py
        import crash_repack
        return crash_repack.main(["--kills", str(a.kills), "--seed", str(a.seed)]
                                 + (["--keep", str(a.keep)] if a.keep else []))
    if not scenarios or set(scenarios) - set(SCENARIOS):
        ap.error(f"--scenarios: choose among {', '.join(SCENARIOS)}, or run or repack alone")
    base = a.keep or Path(tempfile.mkdtemp(prefix="lin-crash-"))
    base.mkdir(parents=True, exist_ok=True)
    per_lab = -(-a.kills // a.jobs)
    jobs = [(str(base / f"lab{i}"), a.seed + i, per_lab, scenarios) for i in range(a.jobs)]
    t0 = time.monotonic()
    if a.jobs == 1:
        results = [_lab_entry(jobs[0])]
    else:
        from multiprocessing import Pool
        with Pool(a.jobs) as pool:
            results = pool.map(_lab_entry, jobs)
    total: Counter = Counter()
    for r in results:
        print(json.dumps(r))
        total.update({k: v for k, v in r.items() if isinstance(v, int) and k != "seed"})
    failed = [r["failed"] for r in results if "failed" in r]
    summary = {"kills": total["kills"], "rounds": total["rounds"],
               "kills_at_kill_points": total["kills at a kill point"],
               "kills_after_random_delay": total["kills after a random delay"],
               "checks_after_rounds": total["checks"],
               "checks_through_lin_fsck_full": total["checks through `lin fsck --full`"],
               "remote_checks_verify_full": total["remote checks (verify --full)"],
               "remote_checks_through_lin_verify_full": total["remote checks through `lin verify --full`"],
               "version_reads_byte_exact": total["version reads (byte-exact)"],
               "failed_checks": len(failed),
               "lost_or_corrupt_versions": sum(1 for f in failed if "version" in f or "bytes" in f),
               "failures": failed,
               "by_scenario": {s: {"kills": total[f"{s} kills"], "rounds": total[f"{s} rounds"]} for s in scenarios},
               "killed_commits": {"absent": total["killed commits absent"],
                                  "complete": total["killed commits complete"]},
               "restored_after_killed_gc": total["restored after killed gc"],
               "killed_clones": {"absent": total["killed clones absent"],
                                 "complete, checkout finished": total["killed clones complete (checkout finished)"]},
               "data_add_included": data_add_available(), "seconds": round(time.monotonic() - t0, 1),
               "python": sys.version.split()[0], "cpus": os.cpu_count()}
    print(json.dumps({"summary": summary}, indent=2))
    if a.keep is None and not failed:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
