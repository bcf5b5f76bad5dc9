"""No secrets in the journal: the audit log keeps command lines with credentials redacted, before
the entry is hashed."""

from __future__ import annotations

import json

import pytest

from lineagestore.core.audit import redact

SECRET = "hunter2SECRET"


@pytest.mark.parametrize("argv, expected", [
    (["lin", "remote", "add", "o", f"s3://AKIA:{SECRET}@host:9000/bucket"],
     ["lin", "remote", "add", "o", "s3://***@host:9000/bucket"]),
    (["lin", "clone", f"https://user:{SECRET}@example.test/x", "dir"],
     ["lin", "clone", "https://***@example.test/x", "dir"]),
    (["lin", "clone", f"https://s3.example.test/b/k?X-Amz-Signature={SECRET}&X-Amz-Credential=a", "d"],
     ["lin", "clone", "https://s3.example.test/b/k?***", "d"]),
    (["lin", "x", "--token", SECRET, "--name", "n"], ["lin", "x", "--token", "***", "--name", "n"]),
    (["lin", "x", f"--api-key={SECRET}"], ["lin", "x", "--api-key=***"]),
    (["lin", "commit", "m", "--param", f"hf_token={SECRET}", "--param", "lr=3e-5"],
     ["lin", "commit", "m", "--param", "hf_token=***", "--param", "lr=3e-5"]),
    (["lin", "commit", "model", "--name", "tokenizer_fix", "--message", "auth flow"],  # names, not values
     ["lin", "commit", "model", "--name", "tokenizer_fix", "--message", "auth flow"]),
])
def test_redact(argv, expected):
    assert redact(argv) == expected


def test_the_journal_never_holds_a_secret(tmp_path, lin, model_dir):
    store = tmp_path / "p" / ".lineage"
    assert lin("--store", store, "init")[0] == 0
    assert lin("--store", store, "import", model_dir, "--name", "base")[0] == 0
    from conftest import make_model_dir
    code, _, err = lin("--store", store, "commit", make_model_dir(tmp_path / "m2", seed=5), "--name", "again",
                       "--param", f"hf_token={SECRET}", "--param", "lr=3e-5")
    assert code == 0, err
    log = (store / "audit.log").read_text()
    assert SECRET not in log
    entries = [json.loads(line) for line in log.splitlines()]
    assert entries[-1]["argv"][-4:] == ["--param", "hf_token=***", "--param", "lr=3e-5"]
    code, out, err = lin("--store", store, "audit", "--verify")
    assert code == 0, out + err
