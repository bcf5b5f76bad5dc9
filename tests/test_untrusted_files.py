"""Files from outside read as an attacker could have written them: a model folder is stored whole
or not at all (an unreadable file or folder fails the commit, naming it), safetensors headers are
checked as strictly as the ``safetensors`` library checks them (at commit and in fsck), pickles
are recognised by their content and never unpickled, and a data file's lines are bounded (a line
over ``data.max_record_bytes`` is refused naming its file and line, without holding it in memory;
a record nested deeper than 128 levels is a bad line, the same in every process)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import make_model_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineagestore import Repo, data
from lineagestore.core.errors import InvalidInput, MalformedFile, PickleRefused
from lineagestore.core.objects import TensorEntry, TensorFile
from lineagestore.core.safetensors_io import parse_header, read_layout
from lineagestore.data import scan as scan_mod
from lineagestore.data.blocks import parse_block
from lineagestore.guard import fsck


def _without_dac_override() -> None:
    """In the child, before exec: drop the capabilities that let root read any file whatever its
    mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, so mode 000 means
    unreadable to it as to anyone else."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def lin_as_reader(store: Path, *args: str) -> subprocess.CompletedProcess:
    """``lin`` in a new process for which mode 000 means unreadable (root's bypass dropped)."""
    env = {**os.environ, "LIN_STORE": str(store), "LIN_NO_PROGRESS": "1"}
    try:
        return subprocess.run([sys.executable, "-m", "lineagestore.cli.main", *args], env=env, cwd=store.parent,
                              capture_output=True, text=True, timeout=300,
                              preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as e:  # no CAP_SETPCAP to drop them with
        pytest.skip(f"cannot make a file unreadable to root here: {e}")


# ------------------------------------------------------------------ nothing silently left out


@pytest.mark.parametrize("what", ["file", "folder", "file in a folder"])
def test_an_unreadable_file_or_folder_fails_the_commit_naming_it(tmp_path, what):
    src = make_model_dir(tmp_path / "m")
    (src / "sub").mkdir()
    (src / "sub" / "notes.txt").write_text("part of the model")
    Repo.init(tmp_path / ".lineage")
    target = {"file": src / "config.json", "folder": src / "sub", "file in a folder": src / "sub" / "notes.txt"}[what]
    os.chmod(target, 0)
    r = lin_as_reader(tmp_path / ".lineage", "import", str(src), "--name", "m")
    assert r.returncode == 4, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"error: {target}: cannot be read (permission denied); lin stores every file of a model folder"
    assert "Traceback" not in r.stderr
    os.chmod(target, 0o755)
    assert Repo.open(tmp_path / ".lineage").versions() == {}


# ------------------------------------------------------------------ safetensors headers


def st_file(header: bytes | dict, data: bytes = b"") -> bytes:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + data


def f32(offsets=(0, 4), shape=(1,), **extra) -> dict:
    return {"dtype": "F32", "shape": list(shape), "data_offsets": list(offsets), **extra}


#: files the safetensors library refuses, and so must lin (what its one-line error says)
BAD_HEADERS = {
    "float shape": (st_file({"a": f32(shape=[1.0])}, b"1234"), "shape"),
    "string shape": (st_file({"a": f32(shape=["1"])}, b"1234"), "shape"),
    "bool shape": (st_file({"a": f32(shape=[True])}, b"1234"), "shape"),
    "negative shape": (st_file({"a": f32(shape=[-1])}, b"1234"), "shape"),
    "shape not a list": (st_file({"a": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}}, b"1234"), "shape"),
    "float offset": (st_file({"a": f32(offsets=[0, 4.0])}, b"1234"), "data_offsets"),
    "string offset": (st_file({"a": f32(offsets=["0", 4])}, b"1234"), "data_offsets"),
    "three offsets": (st_file({"a": f32(offsets=[0, 4, 4])}, b"1234"), "data_offsets"),
    "offsets past 2**64": (st_file({"a": f32(offsets=[0, 2**64])}, b"1234"), "data_offsets"),
    "reversed offsets": (st_file({"a": f32(offsets=[4, 0])}, b"1234"), "offset"),
    "gap before a tensor": (st_file({"a": f32(offsets=[4, 8])}, b"12341234"), "not contiguous"),
    "overlapping tensors": (st_file({"a": f32(), "b": f32()}, b"1234"), "not contiguous"),
    "bytes after the last tensor": (st_file({"a": f32()}, b"12345"), "after the last tensor"),
    "size not dtype x shape": (st_file({"a": f32(shape=[2])}, b"1234"), "needs 8"),
    "size overflows": (st_file({"a": f32(shape=[2**62, 8])}, b"1234"), "too large"),
    "sub-byte size off a byte boundary": (st_file({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}},
                                                  b"1"), "byte boundary"),
    "unknown dtype": (st_file({"a": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}, b"1234"), "dtype"),
    "dtype not a string": (st_file({"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}, b"1234"), "dtype"),
    "missing dtype": (st_file({"a": {"shape": [1], "data_offsets": [0, 4]}}, b"1234"), "dtype"),
    "entry not an object": (st_file({"a": [1, 2]}, b"1234"), "malformed entry"),
    "metadata value not a string": (st_file({"__metadata__": {"x": 1}, "a": f32()}, b"1234"), "__metadata__"),
    "metadata a list": (st_file({"__metadata__": [], "a": f32()}, b"1234"), "__metadata__"),
    "metadata a string": (st_file({"__metadata__": "x", "a": f32()}, b"1234"), "__metadata__"),
    "duplicate field": (st_file(b'{"a": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
                                b"1234"), "twice"),
    "NaN in the header": (st_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": NaN}}',
                                  b"1234"), "NaN"),
    "lone surrogate name": (st_file(b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
                                    b"1234"), "surrogate"),
    "number of 5000 digits": (st_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": '
                                      + b"9" * 5000 + b"}}", b"1234"), "malformed safetensors header"),
    "not UTF-8": (st_file(b'{"\xff": 1}'), "UTF-8"),
    "not an object": (st_file(b"[]"), "not a JSON object"),
    "nested 200 deep": (st_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": '
                                + b"[" * 200 + b"]" * 200 + b"}}", b"1234"), "nested"),
    "nested 100000 deep": (st_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": '
                                   + b"[" * 100000 + b"]" * 100000 + b"}}", b"1234"), "nested"),
    "truncated": (st_file({"a": f32()}, b"12"), "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_a_header_the_safetensors_library_refuses_is_refused_in_one_line(tmp_path, case):
    import safetensors
    raw, says = BAD_HEADERS[case]
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(raw)
    p = tmp_path / "model.safetensors"
    p.write_bytes(raw)
    with pytest.raises(MalformedFile) as e:
        read_layout(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg and len(msg) < 400, msg
    assert says in msg


def test_a_duplicate_tensor_name_is_refused_though_the_library_keeps_the_last(tmp_path):
    # the library reads the header into a map and keeps the second entry: two readers of the same
    # file could disagree about which tensor it holds; lin refuses the file
    p = tmp_path / "model.safetensors"
    p.write_bytes(st_file(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                          b'"a": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}}', b"1234"))
    with pytest.raises(MalformedFile, match="'a' twice"):
        read_layout(p)


def test_a_header_length_over_the_library_bound_is_refused_before_reading_it(tmp_path):
    p = tmp_path / "model.safetensors"
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 100_000_001))
        f.truncate(200_000_000)  # sparse: nothing of it is written or read
    with pytest.raises(MalformedFile, match="header of 100,000,001 bytes is over the limit of 100,000,000"):
        read_layout(p)


GOOD_HEADERS = {
    "metadata null": st_file({"__metadata__": None, "a": f32()}, b"1234"),
    "extra field": st_file({"a": f32(x={"y": [1, 2]})}, b"1234"),
    "leading and trailing spaces": st_file(b'  {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}  ',
                                           b"1234"),
    "no tensors": st_file({}),
    "zero-size tensors at one offset": st_file({"a": f32(offsets=[0, 0], shape=[0]),
                                                "b": f32(offsets=[0, 0], shape=[0, 3])}),
    "sub-byte dtype": st_file({"a": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"1"),
    "six-bit dtype": st_file({"a": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}}, b"123"),
    "escaped name": st_file({"caf\u00e9 \u2603": f32()}, b"1234"),
}


@pytest.mark.parametrize("case", sorted(GOOD_HEADERS))
def test_a_header_the_library_accepts_is_accepted(tmp_path, case):
    import safetensors
    raw = GOOD_HEADERS[case]
    lib = {name: (d["dtype"], d["shape"]) for name, d in safetensors.deserialize(raw)}
    p = tmp_path / "model.safetensors"
    p.write_bytes(raw)
    assert {s.name: (s.dtype, list(s.shape)) for s in read_layout(p).tensors} == lib


_value = st.one_of(st.integers(-3, 9), st.floats(0, 9, allow_nan=False), st.text("0123", max_size=2),
                   st.booleans(), st.none())
_entry = st.fixed_dictionaries(
    {"dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "U8", "F4", "F6_E3M2", "I64", "C64", "F31"]),
                        _value),
     "shape": st.one_of(st.lists(st.one_of(st.integers(0, 4), _value), max_size=3), _value),
     "data_offsets": st.one_of(st.lists(st.one_of(st.integers(0, 40), _value), min_size=1, max_size=3),
                               st.tuples(st.integers(0, 40), st.integers(0, 40)).map(list))},
    optional={"extra": _value})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.text("abc", min_size=1, max_size=2), _entry, max_size=3),
       metadata=st.one_of(st.none(), st.just("absent"), st.dictionaries(st.text("xy", max_size=1), _value, max_size=2)),
       tail=st.integers(0, 40))
def test_property_lin_accepts_exactly_the_headers_the_library_accepts(entries, metadata, tail):
    import safetensors
    header: dict = {} if metadata == "absent" else {"__metadata__": metadata}
    header.update(entries)
    raw = st_file(header, bytes(tail))
    try:
        safetensors.deserialize(raw)
        lib_ok = True
    except safetensors.SafetensorError:
        lib_ok = False
    hb = raw[8:]
    try:
        parse_header(hb, len(raw), "x.safetensors")
        ours_ok = True
    except MalformedFile:
        ours_ok = False
    assert ours_ok == lib_ok, header


def _tensor_file(store, header: str, tensors: list[tuple[str, str, list, bytes]]) -> str:
    entries = [TensorEntry(n, d, s, len(raw), store.put("blob", raw)) for n, d, s, raw in tensors]
    size = 8 + len(header.encode()) + sum(len(raw) for *_, raw in tensors)
    return store.put_object(TensorFile(header=header, size=size, tensors=entries))


def test_fsck_checks_each_tensor_file_header_as_strictly(repo, store_dir):
    good = _tensor_file(repo.objects, '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                        [("a", "F32", [1], b"1234")])
    # a shape the old reader took (int(2.0) is 2)
    lenient = _tensor_file(repo.objects, '{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}',
                           [("a", "F32", [2], b"12345678")])
    # a tensor list that is not what the header says
    disagrees = _tensor_file(repo.objects, '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                             [("a", "I32", [2], b"12345678")])
    rep = fsck.check(repo)
    corrupt = {p.subject: p.message for p in rep.problems if p.kind == "malformed"}
    assert set(corrupt) == {lenient, disagrees}, rep.problems
    assert good not in corrupt
    assert "shape" in corrupt[lenient] and lenient in corrupt[lenient]
    assert "does not match its header" in corrupt[disagrees]
    assert "\n" not in corrupt[lenient] + corrupt[disagrees]


# ------------------------------------------------------------------ pickles by content


class _Touch:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _torch_like_zip(pkl: bytes, root: str = "archive") -> bytes:
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # the layout torch.save writes
        z.writestr(f"{root}/data.pkl", pkl)
        z.writestr(f"{root}/byteorder", "little")
        z.writestr(f"{root}/data/0", bytes(16))
        z.writestr(f"{root}/version", "3\n")
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _pickles(marker: str) -> dict[str, bytes]:
    payload = _Touch(marker)
    out = {f"protocol{p}.dat": pickle.dumps(payload, protocol=p) for p in range(6)}
    out["state.weights"] = _torch_like_zip(pickle.dumps({"w": payload}, protocol=2))
    out["scripted.model"] = _torch_like_zip(pickle.dumps(payload, protocol=2), root="")
    out["objects.npy"] = _npy(np.array([{"a": 1}, None], dtype=object))
    out["fields.npy"] = _npy(np.zeros(2, dtype=[("x", "<f4"), ("o", "O")]))
    out["arrays.npz"] = _npz(fine=np.zeros(3), bad=np.array([None, 1], dtype=object))
    return out


@pytest.mark.parametrize("name", sorted(_pickles("m")))
def test_a_pickle_under_any_name_is_refused_by_its_content_and_never_unpickled(repo, tmp_path, name):
    marker = tmp_path / "unpickled"
    src = make_model_dir(tmp_path / "m")
    (src / name).write_bytes(_pickles(str(marker))[name])
    with pytest.raises(PickleRefused) as e:
        repo.import_model(src, "bad")
    assert str(e.value).startswith(f"{src / name}: is a pickle") and "never stores or opens them" in str(e.value)
    assert not marker.exists()
    assert repo.versions() == {}


def test_real_torch_files_are_refused_by_content(repo, tmp_path):
    torch = pytest.importorskip("torch")
    src = make_model_dir(tmp_path / "m")
    torch.save({"w": torch.zeros(3)}, src / "state.weights")
    with pytest.raises(PickleRefused, match="state.weights"):
        repo.import_model(src, "zip")
    (src / "state.weights").unlink()
    torch.save({"w": torch.zeros(3)}, src / "legacy.weights", _use_new_zipfile_serialization=False)
    with pytest.raises(PickleRefused, match="legacy.weights"):
        repo.import_model(src, "legacy")
    assert repo.versions() == {}


def _sentencepiece_model() -> bytes:
    """A tokenizer.model as sentencepiece writes it: a ModelProto whose first field is its pieces."""
    def field(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload
    pieces = b"".join(field(1, field(1, p.encode()) + b"\x15" + struct.pack("<f", -i) + b"\x18\x01")
                      for i, p in enumerate(["<unk>", "<s>", "</s>", "\u2581the", "\u2581a"]))
    return pieces + field(2, b"\x08\x01") + field(3, field(1, b"nmt_nfkc"))


def test_real_model_folder_files_are_not_taken_for_pickles(repo, tmp_path, tiny_hf_model):
    src = tmp_path / "m"
    shutil.copytree(tiny_hf_model, src)
    (src / "tokenizer.model").write_bytes(_sentencepiece_model())
    (src / "merges.txt").write_text("#version: 0.2\n\u0120 t\n\u0120 a\n")
    (src / "vocab.txt").write_text("[PAD]\n[unused0]\n[CLS]\n")
    (src / "changes.txt").write_text("cleanup\nfixed the tokenizer\n(see notes)\n")
    (src / "model.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    (src / "stats.npy").write_bytes(_npy(np.arange(6, dtype=np.float32)))
    (src / "arrays.npz").write_bytes(_npz(a=np.zeros(3), b=np.ones((2, 2), dtype=np.int8)))
    with zipfile.ZipFile(src / "assets.zip", "w") as z:
        z.writestr("config.json", "{}")
    # a safetensors file whose header length starts with the bytes 0x80 0x02, under another name
    hb = json.dumps({"a": f32()}).encode()
    hb += b" " * (0x280 - len(hb))
    (src / "extra.weights").write_bytes(struct.pack("<Q", len(hb)) + hb + b"1234")
    rng = np.random.default_rng(0)
    for i in range(3):  # binary files that start like a protocol-2 pickle
        (src / f"random{i}.data").write_bytes(b"\x80\x02" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    repo.import_model(src, "real")
    out = tmp_path / "out"
    repo.checkout("v001", to=out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())


def test_a_pickle_named_safetensors_says_it_is_a_pickle(repo, tmp_path):
    src = make_model_dir(tmp_path / "m")
    (src / "model.safetensors").write_bytes(pickle.dumps({"w": [1.0] * 100}, protocol=4))
    with pytest.raises(PickleRefused, match="model.safetensors: is a pickle"):
        repo.import_model(src, "bad")


# ------------------------------------------------------------------ data lines


def set_limit(store_dir: Path, limit: int, workers: int = 0) -> None:
    cfg = store_dir / ".lineage" / "config.toml"
    cfg.write_text(cfg.read_text() + f"\n[data]\nmax_record_bytes = {limit}\n")
    if workers:
        text = cfg.read_text()
        cfg.write_text(text.replace("[core]\n", f"[core]\nworkers = {workers}\n", 1) if "[core]\n" in text
                       else text + f"\n[core]\nworkers = {workers}\n")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
@pytest.mark.parametrize("pool", [False, True])
def test_a_line_over_the_limit_is_refused_naming_file_and_line(store_dir, monkeypatch, suffix, pool):
    set_limit(store_dir, 1000, workers=2 if pool else 1)
    repo = Repo.open(store_dir / ".lineage")
    lines = [json.dumps({"text": f"verse {i}"}) for i in range(3000)]
    lines[2040] = json.dumps({"text": "x" * 1001})
    raw = ("\n".join(lines) + "\n").encode()
    comp = {".jsonl": bytes, ".jsonl.gz": gzip.compress, ".jsonl.zst": zstandard.ZstdCompressor().compress}[suffix]
    f = store_dir / f"long{suffix}"
    f.write_bytes(comp(raw))
    if pool:
        monkeypatch.setattr(scan_mod, "INLINE_LIMIT", 1)
        monkeypatch.setattr(scan_mod, "BLOCK", 5000)
    before = set(repo.objects.iter_ids())
    with pytest.raises(InvalidInput) as e:
        data.register(repo, f, tokenizer=False)
    assert str(e.value) == f"{f}: line 2041 is longer than 1,000 bytes (data.max_record_bytes)"
    assert "data.max_record_bytes in .lineage/config.toml" in e.value.hint
    assert repo.refs.as_dict("refs/data/") == {}
    assert set(repo.objects.iter_ids()) == before
    lines[2040] = json.dumps({"text": "x" * 985})  # 1000 bytes: at the limit
    f.write_bytes(comp(("\n".join(lines) + "\n").encode()))
    assert data.register(repo, f, tokenizer=False).examples == 3000


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=30), final_newline=st.booleans(),
       limit=st.integers(1, 30), cuts=st.lists(st.integers(0, 1500), max_size=8))
def test_property_the_line_limit_names_the_first_overlong_line_however_the_bytes_arrive(
        lengths, final_newline, limit, cuts):
    data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if final_newline else b"")
    first_bad = next((i + 1 for i, n in enumerate(lengths) if n > limit), None)
    guard = scan_mod.LineLimit(Path("f.jsonl"), limit)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    try:
        for a, b in zip(bounds, bounds[1:], strict=False):
            guard.feed(data[a:b])
    except InvalidInput as e:
        assert str(e) == f"f.jsonl: line {first_bad} is longer than {limit:,} bytes (data.max_record_bytes)"
    else:
        assert first_bad is None


def test_the_limit_counts_the_last_line_without_a_newline(store_dir):
    set_limit(store_dir, 100)
    repo = Repo.open(store_dir / ".lineage")
    f = store_dir / "tail.jsonl"
    f.write_text('{"text": "a"}\n{"text": "b"}\n' + json.dumps({"text": "c" * 200}))
    with pytest.raises(InvalidInput, match=r"tail.jsonl: line 3 is longer than 100 bytes"):
        data.register(repo, f, tokenizer=False)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_1_gib_line_in_a_compressed_file_never_takes_gbs_of_memory(tmp_path, suffix):
    Repo.init(tmp_path / ".lineage")
    f = tmp_path / f"bomb{suffix}"
    with open(f, "wb") as out:
        w = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) if suffix.endswith("gz") \
            else zstandard.ZstdCompressor(level=1).stream_writer(out)
        w.write(b'{"text": "a"}\n{"text": "')
        piece = b"a" * (64 << 20)
        for _ in range(16):  # 1 GiB in one line
            w.write(piece)
        w.write(b'"}\n')
        w.close()
    assert f.stat().st_size < 8 << 20
    # lin runs as the child of a small process, which reports lin's peak memory: a child forked
    # from pytest itself would count pytest's memory (torch and all) as its own until its exec
    probe = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "_, status, use = os.wait4(p.pid, 0); print(os.waitstatus_to_exitcode(status), use.ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "lineagestore.cli.main", "data", "add",
                        str(f)], env={**os.environ, "LIN_STORE": str(tmp_path / ".lineage"), "LIN_NO_PROGRESS": "1"},
                       capture_output=True, text=True, timeout=600)
    code, peak_kib = map(int, r.stdout.split())
    assert code == 4, r.stderr
    assert r.stderr.startswith(f"error: {f}: line 2 is longer than 67,108,864 bytes (data.max_record_bytes)"), r.stderr
    assert peak_kib << 10 < 600 << 20, f"peak memory {peak_kib >> 10} MiB"


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_the_decoder_hands_out_bounded_pieces_of_a_bomb_and_of_many_members(fmt):
    from lineagestore.data.records import Decoder
    zeros = bytes(256 << 20)
    comp = gzip.compress(zeros, 1) if fmt == "jsonl.gz" else zstandard.ZstdCompressor(level=1).compress(zeros)
    assert len(comp) < 2 << 20
    sizes = [len(x) for x in Decoder(fmt, "bomb").pieces(comp)]
    assert sum(sizes) == len(zeros) and max(sizes) <= (8 << 20 if fmt == "jsonl.gz" else 64 << 20)
    one = gzip.compress if fmt == "jsonl.gz" else zstandard.ZstdCompressor().compress
    members = [f'{{"text": "{i}"}}\n'.encode() for i in range(3000)]  # as bgzip and pzstd write
    d = Decoder(fmt, "many")
    assert b"".join(d.pieces(b"".join(one(m) for m in members))) + d.finish() == b"".join(members)


def _nested(levels: int) -> str:
    """A record ``levels`` deep: the record object holding ``levels - 1`` nested lists."""
    return '{"text": "deep", "tree": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


@pytest.mark.parametrize("levels,ok", [(127, True), (128, True), (129, False), (400, False), (100000, False)])
def test_a_record_nested_too_deeply_is_a_bad_line_in_every_process(store_dir, monkeypatch, levels, ok):
    f = store_dir / "nested.jsonl"
    lines = [json.dumps({"text": f"v{i}"}) for i in range(400)]
    lines[123] = _nested(levels)
    f.write_text("\n".join(lines) + "\n")
    one = scan_mod.scan_file(f, skip_bad_lines=True, workers=1)
    monkeypatch.setattr(scan_mod, "INLINE_LIMIT", 1)
    monkeypatch.setattr(scan_mod, "BLOCK", 2000)
    many = scan_mod.scan_file(f, skip_bad_lines=True, workers=2)
    for res in (one, many):
        if ok:
            assert (res.examples, res.bad) == (400, 0)
        else:
            assert (res.examples, res.bad) == (399, 1)
            assert res.bad_first == [(124, "record nested more than 128 levels deep")]
    assert one.ids.array().tobytes() == many.ids.array().tobytes()


def test_parse_block_depth_rule_does_not_depend_on_the_callers_stack():
    line = (_nested(128) + "\n").encode()

    def deep(n: int):
        return parse_block(line) if n == 0 else deep(n - 1)
    assert deep(0).examples == 1
    assert deep(500).examples == 1  # 500 frames already on the stack


@pytest.mark.parametrize("text,problem", [
    ("[data]\nmax_record_bytes = 0\n", "must be >= 1"),
    ("[data]\nmax_record_bytes = -5\n", "must be >= 1"),
    ("[data]\nmax_record_bytes = nan\n", "finite"),
    ("[data]\nmax_record_bytes = 1.5\n", "whole number"),
])
def test_a_bad_record_limit_is_one_line_naming_the_file(store_dir, text, problem):
    cfg = store_dir / ".lineage" / "config.toml"
    cfg.write_text(cfg.read_text() + "\n" + text)
    with pytest.raises(InvalidInput, match=rf"config.toml: data.max_record_bytes = .* {problem}"):
        _ = Repo.open(store_dir / ".lineage").settings
