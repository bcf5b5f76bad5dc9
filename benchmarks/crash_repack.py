#!/usr/bin/env python
"""Crash safety of `lin repack` (the ``repack`` scenario of benchmarks/crash.py): SIGKILL it
anywhere and check that nothing is lost.

The lab's store starts as a lineage of 6 small bf16 versions on one branch (fp32 master weights
moved by a little noise each version and saved as bf16, so a cold version's pieces pack as XOR
deltas against its newer neighbour, byte planes for keyframes), packed once. Each round gives
`lin repack` work: in most rounds a new child (the old tip's pieces turn cold: packed as deltas),
a new ``core.hot_versions`` (1 to 6: pieces turn cold, or hot again and are written back loose),
a new ``core.keyframe_interval``, and sometimes another active version (HEAD is hot). Then:

- `lin repack` runs as a subprocess and is SIGKILLed at the N-th kill point of its path
  (``LIN_TEST_KILL_AT=any:N``, N drawn from all the points its plan passes, counted from a dry
  run: objects written back loose, the new pack written and renamed, its index renamed, old
  packs and loose copies deleted) or at a random moment of its measured run time;
- fsck with every byte re-hashed is clean (in-process; every 10th time the real
  `lin fsck --full`), every version reads back byte-exact and HEAD names one of them;
- versions are checked out (`Repo.checkout(NAME, to=DIR)`, the code of `lin checkout`) and
  compared byte for byte with the files they were committed from: the 6 newest (whose pieces
  move) and 3 older ones drawn at random each round; every 10th round all of them, and the 6
  newest through the real `lin checkout NAME --to DIR`; at the end all through `lin checkout`;
- `lin repack` run again completes (exit 0), leaves no temp file or lock record of the dead
  process, and fsck is clean again.

Usage: python benchmarks/crash_repack.py [--kills 100] [--seed 1] [--keep DIR]
(or python benchmarks/crash.py --scenarios repack). Prints one JSON summary; exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crash import CrashCheckFailed, Lab, Run, _writable_again, digest_folder  # noqa: E402

from lineagestore.api import Repo as ApiRepo  # noqa: E402
from lineagestore.guard import fsck  # noqa: E402
from lineagestore.guard.repack import repack  # noqa: E402

VERSIONS = 6
SHAPES = {"embed.weight": (512, 512), "layers.0.attn.weight": (128, 256), "layers.0.mlp.weight": (256, 256),
          "layers.1.attn.weight": (128, 256), "layers.1.mlp.weight": (256, 256), "norm.weight": (256,)}
PHASES = ("writing objects back loose", "writing the new pack", "deleting old packs and loose copies",
          "at a random moment")
NEW_VERSION_SHARE = 0.6  # rounds that first commit a child: the old tip's pieces turn cold, to be packed


def save_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file of fp32 master weights saved as bf16 (the top 16 bits: truncated)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        raw = (tensors[name].view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))


class RepackLab(Lab):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.scenarios = ("repack",)
        self.master = {n: np.random.default_rng(self.seed).standard_normal(s).astype(np.float32) * 0.02
                       for n, s in SHAPES.items()}
        self.checkouts = self.root / "checkouts"

    def new_model(self) -> Path:
        """The next version: every master weight moved by a small step (a fine-tune's update)."""
        self.model_n += 1
        rng = np.random.default_rng(self.seed * 100_000 + self.model_n)
        for w in self.master.values():
            w += rng.standard_normal(w.shape).astype(np.float32) * 2e-4
        folder = self.src / f"m{self.model_n}"
        folder.mkdir()
        save_bf16(folder / "model.safetensors", self.master)
        (folder / "config.json").write_text(json.dumps({"model_type": "toy", "n": self.model_n}))
        return folder

    def setup(self) -> None:
        self.lin("init")
        first = self.new_model()
        self.lin("import", str(first), "--name", "base")
        self.expected["v001_base"] = digest_folder(first)
        for _ in range(VERSIONS - 1):
            self.commit_plain()
        self.configure(hot=1, keyframes=4)
        self.lin("repack")  # the store has packs (format 3) before the first round
        self.verify("the first repack")

    def configure(self, hot: int, keyframes: int) -> None:
        repo = ApiRepo.open(self.store)
        repo.config.set("core.hot_versions", hot)
        repo.config.set("core.keyframe_interval", keyframes)
        repo.save_config()

    def check_out(self, after: str, names: list[str], cli: bool) -> None:
        """Versions written into fresh folders and compared byte for byte with their sources."""
        repo = cast(ApiRepo, ApiRepo.open(self.store))
        for name in names:
            want = self.expected[name]
            dest = self.checkouts / name
            shutil.rmtree(dest, ignore_errors=True)
            if cli:
                self.lin("checkout", name, "--to", str(dest))
            else:
                repo.checkout(name, to=dest, activate=False)
            if digest_folder(dest) != want:
                raise CrashCheckFailed(f"after {after}: checkout of {name} differs from the files it was made from")
            shutil.rmtree(dest)
        self.stats["version checkouts (byte-exact)"] += len(names)
        if cli:
            self.stats["checkouts through `lin checkout`"] += len(names)

    def kill_repack(self) -> Run:
        """`lin repack` killed at a kill point N drawn from all it will pass, as counted from a
        dry run of the same plan (crash.py's learnt bound collapses on the rounds where a repack
        has little to do), or in ``delay_share`` of the rounds at a random moment of its measured
        run time. Its points, in order: one per object written back loose, three for the new pack
        (written, renamed, its index renamed), one per pack removed, one per loose copy deleted."""
        plan = repack(ApiRepo.open(self.store), dry_run=True)
        unpack, pack = plan.unpacked_objects, 3 if plan.packed_objects else 0
        points = unpack + pack + len(plan.packs_removed) + plan.loose_removed
        if self.rng.random() < self.delay_share and "repack" in self.duration:
            r = self.lin("repack", kill_after=self.rng.uniform(0.1, 0.95) * self.duration["repack"])
            phase = "at a random moment"
        else:
            n = self.rng.randint(1, points + 1)  # + 1: past the last point, the repack ends unkilled
            self.max_point["repack"] = max(self.max_point.get("repack", 0), n)
            t0 = time.monotonic()
            r = self.lin("repack", kill_at=f"any:{n}")
            if not r.killed:
                self.duration["repack"] = time.monotonic() - t0
            phase = ("writing objects back loose" if n <= unpack else "writing the new pack" if n <= unpack + pack
                     else "deleting old packs and loose copies")
        self.stats["rounds"] += 1
        self.stats["repack rounds"] += 1
        if r.killed:
            self.stats["kills"] += 1
            self.stats["repack kills"] += 1
            self.stats["kills after a random delay" if r.spec.startswith("after") else "kills at a kill point"] += 1
            self.stats[f"kills {phase}"] += 1
        return r

    def round(self) -> None:
        if self.rng.random() < NEW_VERSION_SHARE:
            self.commit_plain()
        hot = self.rng.choice([1, 1, 2, 3, 4, 6])
        keyframes = self.rng.choice([2, 3, 10])
        self.configure(hot, keyframes)
        if self.rng.random() < 0.3:
            self.lin("checkout", self.rng.choice(sorted(self.expected)))  # another version is hot
        r = self.kill_repack()
        after = f"repack hot={hot} keyframes={keyframes} ({r.spec})"
        self.verify(after)
        names = sorted(self.expected)
        if self.stats["rounds"] % self.cli_every == 0:  # all in-process, the newest through `lin checkout`
            self.check_out(after, names, cli=False)
            self.check_out(after, names[-VERSIONS:], cli=True)
        else:  # the versions whose pieces moved (the newest) and a few older ones
            self.check_out(after, names[-VERSIONS:] + self.rng.sample(names[:-VERSIONS], min(3, len(names) - VERSIONS)),
                           cli=False)
        done = self.lin("repack", "--json")  # run again: completes
        self.stats["repacks completed after a kill" if r.killed else "repacks completed unkilled"] += 1
        self.assert_recovered("repack")
        rep = fsck.check(self.repo(), quick=False)
        if not rep.ok:
            raise CrashCheckFailed(f"fsck --full after repack run again ({after}): "
                                   + "; ".join(p.message for p in rep.problems[:5]))
        res = json.loads(done.out)
        self.stats["objects packed by the completing repacks"] += int(res.get("packed_objects") or 0)
        self.stats["objects unpacked by the completing repacks"] += int(res.get("unpacked_objects") or 0)

    def final_check(self) -> None:
        self.check_out("the last round", sorted(self.expected), cli=True)
        self.stats["versions at the end"] = len(self.expected)
        repo = self.repo()
        self.stats["packs at the end"] = len(list((self.store / "objects" / "pack").glob("*.pack")))
        self.stats["stored bytes at the end"] = sum(repo.objects.stored_size(o) for o in repo.objects.iter_ids())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs of `lin repack` (default 100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep the lab in this folder")
    a = ap.parse_args(argv)
    base = a.keep or Path(tempfile.mkdtemp(prefix="lin-crash-repack-"))
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    lab = RepackLab(base / "lab", a.seed)
    failed = None
    try:
        lab.setup()
        while lab.stats["kills"] < a.kills:
            lab.round()
        lab.final_check()
    except CrashCheckFailed as e:
        failed = str(e)
    s = lab.stats
    summary = {"kills": s["kills"], "rounds": s["rounds"], "kills_at_kill_points": s["kills at a kill point"],
               "kills_after_random_delay": s["kills after a random delay"],
               "kills_by_phase": {k[len("kills "):]: v for k, v in s.items()
                                  if k.startswith("kills ") and k[len("kills "):] in PHASES},
               "largest_kill_point_drawn": lab.max_point.get("repack"),
               "checks_after_rounds": s["checks"], "checks_through_lin_fsck_full": s["checks through `lin fsck --full`"],
               "version_reads_byte_exact": s["version reads (byte-exact)"],
               "version_checkouts_byte_exact": s["version checkouts (byte-exact)"],
               "checkouts_through_lin_checkout": s["checkouts through `lin checkout`"],
               "repacks_completed_after_a_kill": s["repacks completed after a kill"],
               "repacks_completed_unkilled": s["repacks completed unkilled"],
               "objects_packed_unpacked_by_completing_repacks": [s["objects packed by the completing repacks"],
                                                                  s["objects unpacked by the completing repacks"]],
               "versions": len(lab.expected), "packs_at_the_end": s["packs at the end"],
               "stored_bytes_at_the_end": s["stored bytes at the end"],
               "failed_checks": int(failed is not None), "failure": failed,
               "seconds": round(time.monotonic() - t0, 1), "python": sys.version.split()[0], "cpus": os.cpu_count()}
    print(json.dumps({"summary": summary}, indent=2))
    if a.keep is None and failed is None:
        shutil.rmtree(base, onerror=_writable_again)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
