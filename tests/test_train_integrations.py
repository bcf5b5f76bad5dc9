"""lineagestore.integrations.LineageCallback with a real transformers Trainer, and Repo.commit_model."""

from __future__ import annotations

import json

import pytest
from test_train_support import new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.core.errors import Refused


def _trainer(folder, callback, steps: int = 4):
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(folder / "base")
    model = AutoModelForCausalLM.from_pretrained(folder / "base")
    texts = [json.loads(line)["text"] for line in open(folder / "bible.jsonl")][:64]
    data = [tok(t, truncation=True, max_length=32) for t in texts]
    args = TrainingArguments(output_dir=str(folder / "out"), max_steps=steps, per_device_train_batch_size=4,
                             save_steps=3, save_strategy="steps", logging_steps=1, report_to=[], use_cpu=True,
                             disable_tqdm=True, include_num_input_tokens_seen=True)
    return Trainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[callback],
                   data_collator=DataCollatorForLanguageModeling(tok, mlm=False))


def test_lineage_callback_checkpoints_and_commits(tmp_path, train_assets, monkeypatch):  # noqa: F811 - the fixture
    import shutil
    pytest.importorskip("accelerate")  # transformers.Trainer needs it
    from lineagestore.integrations import LineageCallback
    folder = new_store(tmp_path / "w", train_assets)
    shutil.copytree(train_assets / "base", folder / "base")
    monkeypatch.chdir(folder)
    # the Trainer's 64 rows are the first 64 records of bible.jsonl
    cb = LineageCallback("hf_run", data=[folder / "bible.jsonl"], checkpoint_every=2, row_records=range(64))
    _trainer(folder, cb).train()
    repo = Repo.open(folder / ".lineage")
    v = repo.log()[0]
    assert v.name == "v002_hf_run" and v.kind == "train" and v.active
    assert v.parent_names == ["v001_base"] and [d["file"] for d in v.datasets] == ["bible.jsonl"]
    assert v.datasets[0]["part"] == {"records": 16, "of": 200}  # 4 steps of 4 rows
    assert v.metrics["steps"] == 4 and len(v.metrics["loss_per_interval"]) == 4
    assert v.metrics["tokens_trained"] > 0 and v.params["learning_rate"] == 5e-05  # the Trainer's default
    assert v.params["max_steps"] == 4 and v.params["per_device_train_batch_size"] == 4
    assert repo.commit(v.id).extra["source"] == "transformers.Trainer"
    # checkpoints at steps 2, 3 (the Trainer's save) and 4, then the run closed by the commit
    log = [e.message for e in repo.refs.reflog("refs/runs/hf_run")]
    assert log == ["checkpoint: step 2", "checkpoint: step 3", "checkpoint: step 4", "committed as v002_hf_run"]
    assert repo.runs() == []
    # the same data again is refused before training starts
    with pytest.raises(Refused, match="already trained"):
        _trainer(folder, LineageCallback("again", data=[folder / "bible.jsonl"])).train()
    assert list(repo.versions()) == ["v001_base", "v002_hf_run"]
