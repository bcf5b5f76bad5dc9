"""Record ids, block parsing and sorted id sets (lineagestore.data.records, .blocks, .idsets): properties and
edge cases."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from lineagestore.core.errors import InvalidInput
from lineagestore.core.objects import canonical_json
from lineagestore.data.blocks import parse_block
from lineagestore.data.idsets import ID_DTYPE, merge_sorted, rechunk, sort_unique
from lineagestore.data.records import Decoder, line_record_id, record_id

# JSON values as the json module parses them (no NaN/Infinity: they are not JSON)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
records = st.builds(lambda text, extra: {"text": text, **extra},
                    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
                    st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("text", "messages")),
                                    json_values, max_size=3))


def reorder(obj, rnd: random.Random):
    """The same JSON value with every object's keys in a random order."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(obj, list):
        return [reorder(v, rnd) for v in obj]
    return obj


def serialize(obj, rnd: random.Random) -> str:
    """Any valid JSON spelling of ``obj``: key order, spacing and escaping vary."""
    seps = rnd.choice([(",", ":"), (", ", ": "), (" , ", " : "), (",\t", ":\t")])
    return json.dumps(reorder(obj, rnd), ensure_ascii=rnd.random() < 0.5, separators=seps)


@settings(max_examples=300, deadline=None)
@given(rec=records, seed=st.integers(0, 2**32 - 1))
def test_property_key_order_whitespace_and_escapes_do_not_change_the_id(rec, seed):
    rnd = random.Random(seed)
    a, b = serialize(rec, rnd), serialize(rec, rnd)
    assert line_record_id(a) == line_record_id(b) == record_id(rec)
    # through the block parser (its fast paths) too
    block = (a + "\n" + " " * rnd.randint(0, 2) + b + "\r\n").encode()
    res = parse_block(block)
    assert res.examples == 2 and res.bad == 0
    assert res.ids == record_id(rec)


@settings(max_examples=300, deadline=None)
@given(a=records, b=records)
def test_property_any_change_of_content_changes_the_id(a, b):
    same = canonical_json(a) == canonical_json(b)
    assert (record_id(a) == record_id(b)) == same


@settings(max_examples=200, deadline=None)
@given(rec=records, seed=st.integers(0, 2**32 - 1))
def test_property_one_character_changed_gives_another_id(rec, seed):
    rnd = random.Random(seed)
    text = rec["text"]
    pos = rnd.randrange(len(text) + 1)
    changed = dict(rec, text=text[:pos] + rnd.choice("xyzé\n\"\\") + text[pos:])
    assert record_id(changed) != record_id(rec)


@settings(max_examples=150, deadline=None)
@given(recs=st.lists(records, min_size=1, max_size=20), seed=st.integers(0, 2**32 - 1))
def test_property_block_ids_are_the_sorted_set_of_record_ids(recs, seed):
    rnd = random.Random(seed)
    lines = [serialize(r, rnd) for r in recs]
    res = parse_block(("\n".join(lines) + "\n").encode())
    want = sorted({record_id(r) for r in recs})
    assert res.ids == b"".join(want)
    assert res.examples == len(recs) and res.lines == len(recs)


def test_record_id_is_blake3_128_of_canonical_json():
    import blake3
    rec = {"text": "In the beginning", "b": [1, 2.5, None, True], "a": {"z": "é", "y": "\n"}}
    canon = '{"a":{"y":"\\n","z":"é"},"b":[1,2.5,null,true],"text":"In the beginning"}'.encode()
    assert canonical_json(rec) == canon
    assert record_id(rec) == blake3.blake3(canon).digest()[:16]
    assert line_record_id('{ "text" : "In the beginning", "b":[1,2.5,null,true],"a":{"z":"\\u00e9","y":"\\n"}}') \
        == record_id(rec)


def test_chat_records_key_order_inside_messages_does_not_matter_but_message_order_does():
    m1 = {"role": "user", "content": "hi"}
    m2 = {"role": "assistant", "content": "hello"}
    a = line_record_id(json.dumps({"messages": [m1, m2]}))
    b = line_record_id('{"messages":[{"content":"hi","role":"user"},{"content":"hello","role":"assistant"}]}')
    c = line_record_id(json.dumps({"messages": [m2, m1]}))
    assert a == b != c


def test_parse_block_reports_each_kind_of_bad_line_with_its_number():
    lines = [
        '{"text": "ok"}',
        '{bad json',
        '[1, 2]',
        '{"foo": 1}',
        '{"text": 5}',
        '',
        '   ',
        '{"messages": []}',
        '{"messages": [{"content": "no role"}]}',
        '{"text": NaN}',
        '{"text": 1e999}',
        '{"text": "x"} trailing',
        '{"text": "\\ud800"}',
        '\ufeff{"text": "bom not at file start"}',
    ]
    res = parse_block(("\n".join(lines) + "\n").encode(), at_file_start=False)
    reasons = dict(res.bad_first)
    assert res.lines == len(lines)
    assert res.examples == 1
    assert res.bad == 10 + 1 and len(res.bad_first) == 10  # only the first 10 are described
    assert "invalid JSON" in reasons[2]
    assert reasons[3] == "not a JSON object (a list)"
    assert reasons[4] == "record has no 'text', 'messages', 'conversations', 'prompt'/'completion' or 'instruction'/'output'"
    assert reasons[5] == "'text' is not a string (a number)"
    assert 6 not in reasons and 7 not in reasons  # blank lines are skipped, not bad
    assert reasons[8] == "'messages' is not a non-empty list"
    assert "role" in reasons[9]
    assert "NaN" in reasons[10]
    assert "invalid JSON number" in reasons[11]
    assert "Extra data" in reasons[12]
    assert "surrogate" in reasons[13]


def test_parse_block_non_utf8_lines_are_bad_and_others_still_count():
    block = b'{"text": "caf\xe9"}\n{"text": "fine"}\n\xff\xfe\n'
    res = parse_block(block)
    assert res.examples == 1 and res.bad == 2
    assert res.bad_first[0] == (1, "not valid UTF-8 (byte 0xe9 at column 14)")
    assert res.bad_first[1][0] == 3


def test_parse_block_bom_crlf_and_missing_final_newline():
    res = parse_block('\ufeff{"text": "a"}\r\n{"text": "b"}\r\n{"text": "c"}'.encode(), at_file_start=True)
    assert (res.examples, res.bad, res.lines) == (3, 0, 3)
    assert res.ids == b"".join(sorted(record_id({"text": t}) for t in "abc"))


def test_parse_block_counts_chat_and_text_and_duplicates():
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    lines = [json.dumps({"text": "t"}), json.dumps(chat), json.dumps({"text": "t"}), json.dumps(chat)]
    res = parse_block(("\n".join(lines) + "\n").encode())
    assert (res.examples, res.text, res.chat) == (4, 2, 2)
    assert len(res.ids) == 32  # two distinct records


# ------------------------------------------------------------------ sorted id sets


def _ids(rng, n):
    return rng.integers(0, 256, size=(n, 16), dtype=np.uint8).reshape(-1).view(ID_DTYPE)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nstreams=st.integers(1, 5), dup=st.floats(0, 0.9))
def test_property_merge_sorted_equals_numpy_unique(seed, nstreams, dup):
    rng = np.random.default_rng(seed)
    pool = _ids(rng, 300)
    streams, everything = [], []
    for _ in range(nstreams):
        n = int(rng.integers(0, 200))
        a = pool[rng.integers(0, len(pool), n)] if rng.random() < dup else _ids(rng, n)
        a = sort_unique(a)
        everything.append(a)
        cuts = sorted(rng.integers(0, len(a) + 1, int(rng.integers(0, 4))))
        streams.append([a[i:j] for i, j in zip([0, *cuts], [*cuts, len(a)], strict=True)])
    got = list(merge_sorted(streams))
    flat = np.concatenate(got) if got else np.empty(0, ID_DTYPE)
    want = np.unique(np.concatenate(everything)) if everything else np.empty(0, ID_DTYPE)
    assert flat.tobytes() == want.tobytes()


def test_sort_order_is_bytewise_including_zero_bytes():
    raw = [bytes([0] * 16), bytes([0] * 15 + [1]), bytes([1] + [0] * 15), bytes([0, 0, 0, 1] + [0] * 12),
           bytes([255] * 16), bytes([1] + [0] * 14 + [1])]
    a = sort_unique(np.frombuffer(b"".join(raw), ID_DTYPE))
    assert a.tobytes() == b"".join(sorted(raw))


def test_rechunk_regroups_exactly():
    rng = np.random.default_rng(1)
    parts = [_ids(rng, n) for n in (3, 0, 7, 1, 10)]
    out = list(rechunk(parts, 4))
    assert [len(x) for x in out] == [4, 4, 4, 4, 4, 1]
    assert np.concatenate(out).tobytes() == np.concatenate(parts).tobytes()


# ------------------------------------------------------------------ compressed inputs


def test_decoder_reads_multi_member_gzip_and_multi_frame_zstd():
    a, b = b'{"text": "a"}\n' * 1000, b'{"text": "b"}\n' * 1000
    for fmt, comp in (("jsonl.gz", gzip.compress), ("jsonl.zst", zstandard.ZstdCompressor().compress)):
        blob = comp(a) + comp(b)
        d = Decoder(fmt, "x")
        out = b"".join(d.feed(blob[i:i + 100]) for i in range(0, len(blob), 100)) + d.finish()
        assert out == a + b


@pytest.mark.parametrize("fmt,comp", [("jsonl.gz", gzip.compress), ("jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_decoder_refuses_truncated_and_corrupt_input(fmt, comp):
    blob = comp(b'{"text": "a"}\n' * 10000)
    d = Decoder(fmt, "data." + fmt)
    d.feed(blob[: len(blob) // 2])
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        d.finish()
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        Decoder(fmt, "x").feed(b"\x00" * 64 + blob)
