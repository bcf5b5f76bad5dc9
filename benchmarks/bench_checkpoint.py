"""Cost of one training checkpoint into the store vs ``save_pretrained`` + ``torch.save(optimizer)``.

Both sides are measured in the same run on the same model and optimizer state:

- baseline: ``model.save_pretrained(DIR)`` + ``torch.save(optimizer.state_dict(), DIR/optimizer.pt)``,
  then an fsync of every file written (a checkpoint that is not on disk does not survive a
  crash; the store fsyncs every object). The time without the fsyncs is printed too.
- store: what ``lin train`` does at a checkpoint: the weights from memory into a model tree,
  the optimizer state as safetensors + JSON into a state tree, the checkpoint object and the
  ``refs/runs/<run>`` update.

Scenario: a run that trains the upper half of the transformer layers and freezes the rest
(embeddings, untied lm_head, lower layers), as fine-tunes often do. The first checkpoint of the run stores everything; a later checkpoint (after another
optimizer step) stores only the tensors that changed, the frozen ones cost one hash each.
Targets: first checkpoint <= 1.3x the baseline; later checkpoints <= 0.5x.

    python benchmarks/bench_checkpoint.py [--hidden 512 --layers 8 --repeat 3 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tools/ package


def fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def baseline(model, optimizer, folder: Path) -> tuple[float, float]:
    """(seconds without fsync, seconds with fsync) of save_pretrained + torch.save."""
    import torch
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    t1 = time.perf_counter()
    fsync_tree(folder)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def store_checkpoint(repo, model, optimizer, scheduler, base_tree, run: str, parent, step: int,
                     frozen: dict | None = None):
    """As `lin train` checkpoints (``frozen``: the run's frozen tensor ids, filled on the way)."""
    from lineagestore.train.checkpoint import checkpoint_store, save_state, write_checkpoint
    from lineagestore.train.modelio import store_model
    t0 = time.perf_counter()
    store = checkpoint_store(repo)
    before = store.written_bytes
    with repo.writing():
        stored = store_model(store, model, base_tree=base_tree, hf_format=False, tmp_dir=repo.tmp_dir,
                             known=frozen)
        tree = stored.tree
        if frozen is not None:
            names = {n for n, p in model.named_parameters() if not p.requires_grad}
            frozen.update({n: i for n, i in stored.tensor_ids.items() if n in names})
        state = save_state(store, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        store.flush()
        cid = write_checkpoint(repo, run, step=step, model=tree, state=state, parent=parent, meta={"status": "running"},
                               message=f"checkpoint: step {step}")
    return time.perf_counter() - t0, store.written_bytes - before, cid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--train-layers", type=int, default=4,
                    help="the top N layers (and the final norm) are trained; embeddings, lm_head and the "
                         "layers below are frozen")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement (median reported)")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    import torch

    from lineagestore import Repo
    from tools import samples

    work = Path(a.dir or tempfile.mkdtemp(prefix="bench-ckpt-"))
    work.mkdir(parents=True, exist_ok=True)
    heads = max(1, a.hidden // 64)
    model = samples.tiny_model(arch="llama", hidden=a.hidden, layers=a.layers, heads=heads, kv_heads=heads,
                               intermediate=int(a.hidden * 2.75) // 8 * 8, tie_embeddings=False)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    frozen_layers = a.layers - a.train_layers
    for name, p in model.named_parameters():
        if name.startswith(("model.embed_tokens", "lm_head")) or any(name.startswith(f"model.layers.{i}.")
                                                                     for i in range(frozen_layers)):
            p.requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ids = torch.randint(0, 50000, (2, 64))

    def step():
        model.train()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    step()
    print(f"model: llama hidden {a.hidden}, {a.layers} layers, {params / 1e6:.1f}M parameters "
          f"({params * 4 / 1e6:.0f} MB fp32); trainable {n_train / 1e6:.1f}M "
          f"(embeddings, lm_head and layers 0-{frozen_layers - 1} frozen); Adam state {n_train * 8 / 1e6:.0f} MB")

    rows = {}
    first_s, first_b, base_first, base_first_nosync = [], [], [], []
    later_s, later_b, base_later, base_later_nosync = [], [], [], []
    for r in range(a.repeat):
        store_dir = work / f"store{r}"
        shutil.rmtree(store_dir, ignore_errors=True)
        repo = Repo.init(store_dir / ".lineage")
        # first checkpoint of a run: a fresh store, every tensor is new
        nb, wb = baseline(model, opt, work / "baseline")
        base_first_nosync.append(nb)
        base_first.append(wb)
        frozen: dict = {}
        t, b, cid = store_checkpoint(repo, model, opt, sched, None, "bench", None, 1, frozen)
        first_s.append(t)
        first_b.append(b)
        # a later checkpoint: one more step; frozen tensors are unchanged
        step()
        nb, wb = baseline(model, opt, work / "baseline")
        base_later_nosync.append(nb)
        base_later.append(wb)
        t, b, _ = store_checkpoint(repo, model, opt, sched, None, "bench", cid, 2, frozen)
        later_s.append(t)
        later_b.append(b)
        shutil.rmtree(store_dir, ignore_errors=True)
    med = statistics.median
    rows["first"] = {"store_s": med(first_s), "baseline_s": med(base_first), "baseline_nosync_s": med(base_first_nosync),
                     "store_bytes": int(med(first_b))}
    rows["later"] = {"store_s": med(later_s), "baseline_s": med(base_later), "baseline_nosync_s": med(base_later_nosync),
                     "store_bytes": int(med(later_b))}
    baseline_bytes = sum(p.stat().st_size for p in (work / "baseline").rglob("*") if p.is_file())
    for k, target in (("first", 1.3), ("later", 0.5)):
        r_ = rows[k]
        r_["ratio"] = r_["store_s"] / r_["baseline_s"]
        r_["ratio_vs_nosync"] = r_["store_s"] / r_["baseline_nosync_s"]
        r_["target"] = target
        ok = "meets" if r_["ratio"] <= target else "MISSES"
        print(f"{k:>5} checkpoint: store {r_['store_s']:.3f}s ({r_['store_bytes'] / 1e6:.0f} MB written) vs "
              f"save_pretrained+torch.save {r_['baseline_s']:.3f}s with fsync ({r_['baseline_nosync_s']:.3f}s without; "
              f"{baseline_bytes / 1e6:.0f} MB): {r_['ratio']:.2f}x ({r_['ratio_vs_nosync']:.2f}x vs no fsync); "
              f"target <= {target}x: {ok}")
    if a.json:
        a.json.write_text(json.dumps({"params": params, "trainable": n_train, "rows": rows,
                                      "cpus": os.cpu_count(), "python": sys.version.split()[0]}, indent=2))
    if a.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
