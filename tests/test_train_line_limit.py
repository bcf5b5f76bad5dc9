"""Training reads data lines as the registry does: one bounded line reader
(``data.records.bounded_lines``), so a line over ``data.max_record_bytes`` is refused naming its
file and line, before it is held, in ``lin train`` as in ``lin data add`` (exit 4)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_support import new_store, train_assets  # noqa: F401 - fixture

from lineagestore.core.errors import InvalidInput
from lineagestore.data.records import bounded_lines
from lineagestore.train import dataset as ds

LONG_AT = 21  # the line of the record over the limit


def _write(path: Path, long_bytes: int) -> None:
    lines = [json.dumps({"text": f"line {i}"}) for i in range(1, LONG_AT)]
    lines.append(json.dumps({"text": "x" * long_bytes}))
    lines.append(json.dumps({"text": "after"}))
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


@pytest.mark.parametrize("name", ["long.jsonl", "long.jsonl.gz"])
def test_tokenizing_refuses_a_line_over_the_limit_naming_file_and_line(tmp_path, name):
    from tools.samples import gpt2_tokenizer
    f = tmp_path / name
    _write(f, 500)
    with pytest.raises(InvalidInput) as e:
        ds.load_data([(f, None)], gpt2_tokenizer(), max_record_bytes=100)
    assert str(e.value) == f"{f}: line {LONG_AT} is longer than 100 bytes (data.max_record_bytes)"
    assert "raise data.max_record_bytes" in e.value.hint
    # under the limit the same file tokenizes, every record an example
    assert ds.load_data([(f, None)], gpt2_tokenizer(), max_record_bytes=600).examples == LONG_AT + 1


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       final_newline=st.booleans(), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_property_bounded_lines_splits_as_split_does_however_the_bytes_arrive(lines, final_newline, cuts):
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    got = list(bounded_lines(pieces, "f.jsonl", 12))
    want = data.split(b"\n")
    if want and want[-1] == b"":
        want.pop()  # the newline that ends the file opens no line
    assert got == list(enumerate(want, 1))


def test_lin_train_refuses_a_registered_file_with_a_line_over_the_limit(tmp_path, train_assets):  # noqa: F811
    folder = new_store(tmp_path / "w", train_assets)
    f = folder / "long.jsonl"
    _write(f, 500)
    env = {**os.environ, "LIN_NO_PROGRESS": "1"}
    env.pop("LIN_STORE", None)
    lin = [sys.executable, "-m", "lineagestore.cli.main"]
    added = subprocess.run([*lin, "data", "add", "long.jsonl"], cwd=folder, env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    cfg = folder / ".lineage" / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[data]\nmax_record_bytes = 100\n")  # lowered after the file was added
    r = subprocess.run([*lin, "train", "--data", "long.jsonl", "--output", "x", "--device", "cpu", "--max-steps",
                        "1", "--no-measure", "--yes"], cwd=folder, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert f"✗ 1. data files exist and match their registered fingerprints: {f}: line {LONG_AT} is longer " \
           "than 100 bytes (data.max_record_bytes)" in r.stdout, r.stdout
    listed = subprocess.run([*lin, "log", "--json"], cwd=folder, env=env, capture_output=True, text=True)
    assert [v["name"] for v in json.loads(listed.stdout)] == ["v001_base"], listed.stdout
