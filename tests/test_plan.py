"""`lin plan`: the seven pre-flight checks, each failing for its own reason, and the estimates."""

from __future__ import annotations

import json
import re
import shutil
from collections import namedtuple

import pytest
from test_train_support import SETTINGS, TRAIN_ARGS, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo


@pytest.fixture
def store(tmp_path, train_assets, monkeypatch):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("LIN_STORE", raising=False)
    return folder


def _plan(lin, *args):
    code, out, err = lin("plan", *args, "--json")
    return code, json.loads(out), err


def _checks(p) -> dict:
    return {c["key"]: c for c in p["checks"]}


def test_plan_passes_and_registers_new_data(lin, store, train_assets):  # noqa: F811 - the fixture
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "bible", *TRAIN_ARGS)
    assert code == 0 and p["ok"], [c for c in p["checks"] if not c["ok"]]
    assert [c["number"] for c in p["checks"]] == [1, 2, 3, 4, 5, 6, 7]
    assert p["output"] == "v002_bible" and p["run"] == "bible"
    d = p["data"][0]
    assert d["registered_now"] and d["examples"] == 200
    # training's count: the base's tokenizer on each text, one EOS each (the registry counts no EOS)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(train_assets / "base"))
    texts = [json.loads(line)["text"] for line in open(store / "bible.jsonl")]
    assert d["tokens"] == d["targets"] == sum(len(tok(t)["input_ids"]) + 1 for t in texts)
    assert d["registered_tokens"] == d["tokens"] - 200
    assert p["steps"] == 16 and p["tokens_total"] == 16 * 4 * 32  # packed blocks: every unit is full
    # the estimate is the tokens to train at the measured rate (shown rounded to 1 token/s), one
    # batch of 4 units of 32 tokens measured
    shown = re.fullmatch(r"measured \(([\d,]+) tokens/s over 128 tokens\)", p["estimate_source"])
    assert shown, p["estimate_source"]
    rate = float(shown[1].replace(",", ""))
    assert 2048 / (rate + 0.5) <= p["estimate_s"] <= 2048 / max(rate - 0.5, 1e-9)
    assert p["base_name"] == "v001_base" and not p["base_explicit"] and p["base_active"]
    # human output: a mark and a reason per check, the name, tokens, steps, time
    code, out, _ = lin("plan", "--data", "bible.jsonl", "--name", "bible", *TRAIN_ARGS)
    assert code == 0
    assert out.count("✓") == 7 and "v002_bible" in out and "steps    16" in out and "time     ~" in out
    assert "Ready: all 7 checks passed." in out


def test_plan_without_gpu_needs_device_cpu(lin, store):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = [a for a in TRAIN_ARGS]
    i = args.index("--device")
    del args[i:i + 2]
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "bible", *args)
    assert code == 1 and not p["ok"]
    dev = _checks(p)["device"]
    assert not dev["ok"] and "no GPU" in dev["reason"] and "--device cpu" in dev["hint"]
    assert [c["key"] for c in p["checks"] if not c["ok"]] == ["device"]


def test_plan_missing_unregistered_and_bad_base(lin, store):
    code, p, _ = _plan(lin, "--data", "nope.jsonl", "--name", "x", *TRAIN_ARGS)
    assert code == 1 and not _checks(p)["data"]["ok"] and "missing" in _checks(p)["data"]["reason"]
    code, p, _ = _plan(lin, "--data", "chat.jsonl", "--name", "x", "--no-register", *TRAIN_ARGS)
    c = _checks(p)["data"]
    assert code == 1 and not c["ok"] and "not registered" in c["reason"] and "lin data add" in c["hint"]
    code, p, _ = _plan(lin, "--data", "chat.jsonl", "--name", "x", "--base", "v042", *TRAIN_ARGS)
    c = _checks(p)["base"]
    assert code == 1 and not c["ok"] and "v042" in c["reason"]
    dup, runs = _checks(p)["duplicates"], _checks(p)["runs"]
    assert not dup["ok"] and dup["skipped"] and dup["reason"] == "not checked: no base model"
    assert runs["skipped"] and not _checks(p)["base"]["skipped"]
    code, out, _ = lin("plan", "--data", "chat.jsonl", "--name", "x", "--base", "v042", *TRAIN_ARGS)
    assert code == 1 and "  - 3. " in out and "  ✗ 2. " in out
    assert out.rstrip().endswith("check(s) failed (2); not checked: 3, 6.")


def test_plan_refuses_a_file_changed_since_registration(lin, store):
    code, _out, _err = lin("data", "add", "bible.jsonl")
    assert code == 0
    with open(store / "bible.jsonl", "a") as f:
        f.write('{"text": "one more verse"}\n')
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "x", *TRAIN_ARGS)
    c = _checks(p)["data"]
    assert code == 1 and not c["ok"] and "changed since it was registered" in c["reason"]


def test_plan_disk_and_store_checks(lin, store, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "x", *TRAIN_ARGS)
    c = _checks(p)["disk"]
    assert code == 1 and not c["ok"] and "needed" in c["reason"] and p["disk"]["need"] > 1000
    monkeypatch.undo()
    monkeypatch.chdir(store)
    # damage one blob of the base model: the base check re-hashes every byte of the base
    from lineagestore.versions.models import walk_tree
    repo = Repo.open(store / ".lineage")
    cfg = next(f for f in walk_tree(repo.objects, repo.commit(repo.head()).tree) if f.path == "config.json")
    path = repo.objects.path_for(cfg.id)
    path.parent.chmod(0o755)
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "x", *TRAIN_ARGS)
    ch = _checks(p)
    assert code == 1 and not ch["base"]["ok"] and "fail verification" in ch["base"]["reason"]
    assert ch["store"]["ok"]  # the quick fsck reads blob headers only
    # a ref that names nothing: the quick fsck finds it
    (store / ".lineage" / "refs" / "heads" / "broken").write_text("not-an-id\n")
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "x", *TRAIN_ARGS)
    ch = _checks(p)
    assert code == 1 and not ch["store"]["ok"] and "problem" in ch["store"]["reason"]


def _whole_epoch(args: list[str]) -> list[str]:
    """TRAIN_ARGS without --max-steps, 16 units a step: one epoch of bible.jsonl in a few steps."""
    out = [a for a in args]
    i = out.index("--max-steps")
    del out[i:i + 2]
    out[out.index("--batch-size") + 1] = "16"
    return out


def test_plan_after_training_refuses_duplicates_and_offers_resume(lin, store):
    code, _, err = lin("train", "--data", "bible.jsonl", "--name", "bible", *_whole_epoch(TRAIN_ARGS),
                       "--no-measure", "--yes")
    assert code == 0, err
    # the same file again, on the new version: already trained
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "again", *TRAIN_ARGS)
    c = _checks(p)["duplicates"]
    assert code == 1 and not c["ok"] and "already trained in v002_bible" in c["reason"]
    assert "--allow-overlap" in c["hint"]
    code, p, _ = _plan(lin, "--data", "bible.jsonl", "--name", "again", "--allow-overlap", *TRAIN_ARGS)
    c = _checks(p)["duplicates"]
    assert code == 0 and c["ok"] and c["overridden"] and p["allow_overlap"]
    # estimated from the earlier run now, no measurement
    assert p["estimate_source"].startswith("from earlier run v002_bible")
    # `lin train` is refused by the plan with exit code 7 (a guardrail), nothing trained
    code, out, _ = lin("train", "--data", "bible.jsonl", "--name", "again", *TRAIN_ARGS, "--yes")
    assert code == 7 and "✗ 3. no duplicate training" in out and "already trained in v002_bible" in out
    assert Repo.open(store / ".lineage").versions().keys() == {"v001_base", "v002_bible"}


def test_plan_unfinished_run_on_base(lin, store):
    import lineagestore.train.trainer as T
    from lineagestore.train.plan import make_plan
    from lineagestore.train.settings import TrainSettings
    from lineagestore.train.trainer import TrainingFailed, train
    repo = Repo.open(store / ".lineage")
    p = make_plan(repo, data=[store / "bible.jsonl"], name="first", settings=TrainSettings.build(SETTINGS))
    real = T.compute_loss
    calls = [0]

    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] == 8:
            raise RuntimeError("simulated CUDA error")
        return real(*a, **k)
    T.compute_loss = flaky
    try:
        with pytest.raises(TrainingFailed, match="simulated CUDA error"):
            train(repo, p)
    finally:
        T.compute_loss = real
    # another run on the same base is refused, with the way out
    code, p2, _ = _plan(lin, "--data", "chat.jsonl", "--name", "second", *TRAIN_ARGS)
    c = _checks(p2)["runs"]
    assert code == 1 and not c["ok"] and "first" in c["reason"] and "--resume --run first" in c["hint"]
    # the same command again resumes it
    code, p3, _ = _plan(lin, "--data", "bible.jsonl", "--name", "first", *TRAIN_ARGS)
    c = _checks(p3)["runs"]
    assert code == 0 and c["ok"] and "resumes run 'first' from step 5" in c["reason"]
    assert p3["resume"]["step"] == 5
    # ... but not with other settings
    code, p4, _ = _plan(lin, "--data", "bible.jsonl", "--name", "first", *TRAIN_ARGS, "--lr", "0.5")
    c = _checks(p4)["runs"]
    assert code == 1 and "other settings" in c["reason"] and "lr" in c["reason"]
