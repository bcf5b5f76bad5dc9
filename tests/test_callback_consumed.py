"""LineageCallback records what the Trainer consumed, as ``lin train`` does: a run stopped by
``max_steps`` names a trained part with exactly the records of the rows it trained (checked
against the rows the data collator actually handed to the model, in order); a whole epoch names
the registered dataset; rows that cannot be mapped to records are never claimed as trained."""

from __future__ import annotations

import json
import shutil

import pytest
from test_train_support import new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.data.ledger import iter_record_set
from lineagestore.data.records import line_record_id

BATCH = 4


class _Seen:
    """A collator that records the rows of each batch it builds, then builds it as the LM one does."""

    def __init__(self, tok):
        from transformers import DataCollatorForLanguageModeling
        self.inner = DataCollatorForLanguageModeling(tok, mlm=False)
        self.batches: list[list[int]] = []

    def __call__(self, features):
        self.batches.append([f["row"] for f in features])
        return self.inner([{k: v for k, v in f.items() if k != "row"} for f in features])


def _train(folder, callback, *, rows: int, max_steps: int = -1, epochs: float = 1.0) -> _Seen:
    pytest.importorskip("accelerate")  # transformers.Trainer needs it
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(folder / "base")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [json.loads(line)["text"] for line in open(folder / "bible.jsonl")][:rows]
    data = [{**tok(t, truncation=True, max_length=32), "row": i} for i, t in enumerate(texts)]
    seen = _Seen(tok)
    args = TrainingArguments(output_dir=str(folder / "out"), max_steps=max_steps, num_train_epochs=epochs,
                             per_device_train_batch_size=BATCH, save_strategy="no", logging_steps=1, report_to=[],
                             use_cpu=True, disable_tqdm=True, remove_unused_columns=False, seed=7)
    Trainer(model=AutoModelForCausalLM.from_pretrained(folder / "base"), args=args, train_dataset=data,
            processing_class=tok, callbacks=[callback], data_collator=seen).train()
    return seen


def _line_ids(folder) -> list[bytes]:
    return [line_record_id(line) for line in (folder / "bible.jsonl").read_bytes().splitlines() if line.strip()]


def _records(repo: Repo, dataset_id: str) -> set[bytes]:
    d = repo.objects.get(dataset_id, "dataset")
    return {bytes(x) for chunk in iter_record_set(repo.objects, d.records) for x in chunk}


@pytest.fixture
def folder(tmp_path, train_assets, monkeypatch):  # noqa: F811 - the fixture
    f = new_store(tmp_path / "w", train_assets)
    shutil.copytree(train_assets / "base", f / "base")
    monkeypatch.chdir(f)
    return f


def test_max_steps_records_exactly_the_rows_the_model_was_fed(folder, lin):
    from lineagestore.integrations import LineageCallback
    seen = _train(folder, LineageCallback("early", data=[folder / "bible.jsonl"]), rows=200, max_steps=3)
    fed = [r for batch in seen.batches[:3] for r in batch]  # 3 steps of one batch (later ones were prefetched)
    ids = _line_ids(folder)
    want = {ids[r] for r in fed}
    assert len(fed) == 3 * BATCH and len(want) == 3 * BATCH
    repo = Repo.open(folder / ".lineage")
    v = repo.log()[0]
    assert v.name == "v002_early" and v.metrics["steps"] == 3
    (part_id,) = repo.commit(v.id).datasets
    part = repo.objects.get(part_id, "dataset")
    registered = repo.refs.resolve(f"refs/data/{part.content}")
    assert part.extra["part_of"] == {"dataset": registered, "distinct": 200, "examples": 200}
    assert _records(repo, part_id) == want and part.examples == 3 * BATCH
    # the ledger and the data commands count those records, and only those, as trained
    code, out, _ = lin("data", "check", "bible.jsonl", "--json")
    (rep,) = json.loads(out)
    assert rep["records_seen"] == 3 * BATCH and rep["partly_trained_in"] == ["v002_early"], rep
    assert rep["same_file_trained_in"] == []
    code, out, _ = lin("data", "ls", "--json")
    (row,) = json.loads(out)
    assert row["status"] == "partly trained" and row["records_trained"] == 3 * BATCH
    assert "data_not_recorded" not in repo.commit(v.id).extra


def test_a_whole_epoch_names_the_registered_dataset(folder):
    from lineagestore.integrations import LineageCallback
    cb = LineageCallback("whole", data=[folder / "bible.jsonl"])
    _train(folder, cb, rows=200, epochs=1)
    repo = Repo.open(folder / ".lineage")
    (did,) = repo.commit(repo.head()).datasets
    assert did == repo.refs.resolve(f"refs/data/{repo.objects.get(did, 'dataset').content}")
    assert "part_of" not in (repo.objects.get(did, "dataset").extra or {})


def test_rows_that_are_not_the_records_are_never_claimed(folder):
    from lineagestore.integrations import LineageCallback
    cb = LineageCallback("unmapped", data=[folder / "bible.jsonl"])
    _train(folder, cb, rows=64, max_steps=2)  # 64 rows of a 200-record file, no row_records
    repo = Repo.open(folder / ".lineage")
    c = repo.commit(repo.head())
    assert c.datasets == []
    assert c.extra["data_not_recorded"] == (
        "the run trained part of its data, and which records cannot be told: its rows are not the records "
        "of its data one to one (give row_records=); no record of bible.jsonl is recorded as trained")
    assert cb.warnings == [c.extra["data_not_recorded"]]
