"""Model folders through the store: byte-exact round trips, refusals, checkout safety, status, diff."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model_dir, write_safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineagestore import Repo
from lineagestore.core.errors import InvalidInput, MalformedFile, NotFound, PickleRefused, Refused
from lineagestore.core.safetensors_io import DTYPE_SIZES

ALL_DTYPES = sorted(DTYPE_SIZES)


def read_all(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ round trips

tensor_strategy = st.tuples(
    st.sampled_from(ALL_DTYPES),
    st.lists(st.integers(0, 5), min_size=0, max_size=3),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.dictionaries(st.text("abcdefgh._", min_size=1, max_size=12), tensor_strategy, max_size=6),
       metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3)),
       pad=st.integers(0, 7), seed=st.integers(0, 2**32 - 1))
def test_property_any_safetensors_file_round_trips_byte_exact(tmp_path_factory, specs, metadata, pad, seed):
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (dtype, shape) in specs.items():
        n = math.prod(shape) * DTYPE_SIZES[dtype]
        tensors[name] = (dtype, shape, rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    base = tmp_path_factory.mktemp("st")
    src = base / "src"
    src.mkdir()
    original = write_safetensors(src / "model.safetensors", tensors, metadata, pad)
    repo = Repo.init(base / ".lineage")
    repo.import_model(src, "prop")
    repo.checkout("v001", to=base / "out")
    assert (base / "out" / "model.safetensors").read_bytes() == original


def test_real_safetensors_library_files_with_bf16_and_fp8(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file
    src = tmp_path / "src"
    src.mkdir()
    t = {"bf16": torch.randn(7, 3).to(torch.bfloat16), "fp8": torch.randn(16).to(torch.float8_e4m3fn),
         "fp8b": torch.randn(4).to(torch.float8_e5m2), "empty": torch.zeros(0, 4), "scalar": torch.tensor(3.0),
         "i64": torch.arange(10)}
    save_file(t, str(src / "model.safetensors"), metadata={"format": "pt"})
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(src, "dtypes")
    repo.checkout("v001", to=tmp_path / "out")
    assert read_all(tmp_path / "out") == read_all(src)
    back = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(back[k].reshape(-1).view(torch.uint8), t[k].reshape(-1).view(torch.uint8)) for k in t)


def test_nested_folders_other_files_and_executable_bit(tmp_path):
    src = make_model_dir(tmp_path / "src")
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "notes.txt").write_text("hello")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "big.bin.raw").write_bytes(os.urandom(40 << 20))  # chunked blob
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(src, "nested")
    repo.checkout("v001", to=tmp_path / "out")
    assert read_all(tmp_path / "out") == read_all(src)
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & 0o111


def test_transformers_model_loads_from_checkout_with_same_logits(tmp_path, tiny_hf_model):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(tiny_hf_model, "tiny")
    repo.checkout("v001", to=tmp_path / "out")
    assert read_all(tmp_path / "out") == read_all(tiny_hf_model)
    ids = torch.tensor([[15496, 995, 11, 262, 1110]])
    a = AutoModelForCausalLM.from_pretrained(tiny_hf_model).eval()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


# ------------------------------------------------------------------ dedup, stat cache


def test_unchanged_tensors_cost_nothing(repo, tmp_path):
    src = make_model_dir(tmp_path / "m", seed=1)
    repo.import_model(src, "base")
    # change one tensor only
    p = src / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x40  # last byte belongs to the last tensor in data order
    p.write_bytes(bytes(data))
    res = repo.commit_folder(src, "one_tensor")
    # the new objects: one tensor blob, the tensor-file, the tree, the commit (not counted here)
    assert res.new_bytes < 4000
    d = repo.diff("v001", "v002")
    changed = [t for f in d.files for t in f.tensors]
    assert len(changed) == 1 and changed[0].change == "changed"


def test_recommit_of_unchanged_folder_uses_the_stat_cache(repo, tmp_path):
    src = make_model_dir(tmp_path / "m")
    old = 1_600_000_000
    for p in src.iterdir():
        os.utime(p, (old, old))
    repo.import_model(src, "base")
    res = repo.commit_folder(src, "same", allow_empty=True)  # identical to its parent, on purpose
    assert res.cached_files == 3
    assert res.new_bytes < 2000  # only the (identical) tree is re-put; no file is re-read
    assert repo.commit(repo.resolve("v002")).tree == repo.commit(repo.resolve("v001")).tree


# ------------------------------------------------------------------ refusals


def test_pickle_weights_are_refused_and_never_opened(repo, tmp_path):
    src = make_model_dir(tmp_path / "m")
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04 this would run code")
    with pytest.raises(PickleRefused, match="pytorch_model.bin"):
        repo.import_model(src, "bad")
    assert repo.versions() == {}
    repo.import_model(src, "ok", exclude=("*.bin",))
    assert "v001_ok" in repo.versions()


@pytest.mark.parametrize("cut", [4, 20, 200])
def test_truncated_safetensors_is_refused(repo, tmp_path, cut):
    src = make_model_dir(tmp_path / "m")
    p = src / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-cut] if cut != 4 else p.read_bytes()[:4])
    with pytest.raises(MalformedFile, match="model.safetensors"):
        repo.import_model(src, "trunc")
    assert repo.versions() == {}


def test_malformed_header_is_refused(repo, tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    (src / "model.safetensors").write_bytes((10).to_bytes(8, "little") + b"{not json}")
    with pytest.raises(MalformedFile, match="header"):
        repo.import_model(src, "bad")


def test_missing_empty_and_weightless_folders(repo, tmp_path):
    with pytest.raises(NotFound, match=f"^{tmp_path / 'nope'}: no such folder$"):
        repo.import_model(tmp_path / "nope", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="empty"):
        repo.import_model(tmp_path / "empty", "x")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    with pytest.raises(InvalidInput, match="no model weights"):
        repo.import_model(tmp_path / "cfg", "x")


# ------------------------------------------------------------------ checkout safety, status


def test_checkout_refuses_to_overwrite_local_changes_unless_forced(repo, tmp_path):
    a = make_model_dir(tmp_path / "a", seed=1)
    repo.import_model(a, "a")
    b = make_model_dir(tmp_path / "b", seed=2)
    repo.commit_folder(b, "b")
    work = tmp_path / "work"
    repo.checkout("v002", to=work)
    (work / "config.json").write_text('{"edited": true}')
    with pytest.raises(Refused, match="config.json"):
        repo.checkout("v001", to=work)
    assert (work / "config.json").read_text() == '{"edited": true}'
    assert repo.name_of(repo.head()) == "v002_b"  # nothing moved
    repo.checkout("v001", to=work, force=True)
    assert read_all(work) == read_all(a)


def test_checkout_switches_versions_and_removes_files_it_wrote(repo, tmp_path):
    a = make_model_dir(tmp_path / "a", seed=1)
    repo.import_model(a, "a")
    b = make_model_dir(tmp_path / "b", seed=2)
    (b / "extra.txt").write_text("only in b")
    repo.commit_folder(b, "b")
    work = tmp_path / "work"
    repo.checkout("v002", to=work)
    (work / "untracked.txt").write_text("mine")
    res = repo.checkout("v001", to=work)
    assert not (work / "extra.txt").exists()
    assert (work / "untracked.txt").read_text() == "mine"
    assert res.removed == 1
    files = read_all(work)
    files.pop("untracked.txt")
    assert files == read_all(a)


def test_checkout_never_writes_through_a_symlink(repo, tmp_path):
    a = make_model_dir(tmp_path / "a")
    repo.import_model(a, "a")
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    (work / "config.json").symlink_to(outside)
    with pytest.raises(Refused, match=f"^refusing to overwrite 1 changed file\\(s\\) in {work}: config.json \\(symlink\\)$"):
        repo.checkout("v001", to=work)
    assert outside.read_text() == "precious"
    repo.checkout("v001", to=work, force=True)
    assert outside.read_text() == "precious"
    assert not (work / "config.json").is_symlink()


def test_status_reports_changed_tensors(repo, tmp_path):
    a = make_model_dir(tmp_path / "a")
    repo.import_model(a, "a")
    work = repo.work_dir()
    repo.checkout("v001")
    st = repo.status()
    assert st.work.clean
    p = work / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    (work / "new.txt").write_text("x")
    st = repo.status()
    changes = {c.path: c for c in st.work.changes}
    assert changes["new.txt"].change == "added"
    assert changes["model.safetensors"].change == "modified"
    assert changes["model.safetensors"].tensors == ["layers.2.bias"]


def test_diff_reports_relative_norm_and_max_abs(repo, tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    src = tmp_path / "m"
    src.mkdir()
    write_safetensors(src / "model.safetensors", {"w": ("F32", [16, 16], w.tobytes()),
                                                  "k": ("F32", [2], np.ones(2, np.float32).tobytes())})
    repo.import_model(src, "a")
    w2 = w.copy()
    w2[0, 0] += 0.5
    write_safetensors(src / "model.safetensors", {"w": ("F32", [16, 16], w2.tobytes()),
                                                  "k": ("F32", [2], np.ones(2, np.float32).tobytes()),
                                                  "new": ("F32", [1], b"\0\0\0\0")})
    repo.commit_folder(src, "b")
    d = repo.diff("v001", "v002")
    ts = {t.name: t for f in d.files for t in f.tensors}
    assert ts["new"].change == "added"
    assert ts["w"].max_abs == pytest.approx(0.5, rel=1e-6)
    assert ts["w"].rel_l2 == pytest.approx(0.5 / np.linalg.norm(w.astype(np.float64)), rel=1e-5)
    assert "k" not in ts and d.unchanged_tensors == 1


def test_bf16_diff_values(repo, tmp_path):
    from lineagestore.versions.diff import to_float
    raw = np.array([0x3F80, 0xC000], dtype="<u2").tobytes()  # 1.0, -2.0
    assert list(to_float("BF16", raw)) == [1.0, -2.0]
    assert list(to_float("F8_E4M3", bytes([0x38, 0x7E]))) == [1.0, 448.0]
    assert list(to_float("F8_E5M2", bytes([0x3C]))) == [1.0]
