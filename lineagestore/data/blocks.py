"""Parsing a block of whole lines of a JSONL file: record ids, counts, bad lines, token counts.

This is what the scan's worker processes run on each block (:mod:`lineagestore.data.workers`).
The token counter is passed in (any object with ``count(texts, chats, plain)``), so this module
needs no tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import blake3
import numpy as np

from .idsets import ID_DTYPE, sort_unique
from .records import ID_BYTES, PARSER, canon_escaped, canon_plain, chat_messages, pair_parts, record_kind, too_deep

#: at most this many bad lines are described (all are counted)
MAX_BAD_SHOWN = 10


@dataclass
class BlockResult:
    """What one block of whole lines holds. ``ids`` is a sorted, unique ``S16`` buffer."""

    ids: bytes
    lines: int  # lines in the block (blank and bad ones included)
    examples: int  # valid records (duplicates included)
    text: int
    chat: int
    bad: int
    bad_first: list = field(default_factory=list)  # [(line number in block, 1-based), reason]
    tokens: int | None = None


@dataclass
class _Tally:
    """What the lines of a block gave so far; the texts are kept only when tokens are counted."""

    collect: bool  # keep the texts for the token counter
    ids: list = field(default_factory=list)  # 16-byte record ids, in line order
    chat: int = 0
    bad: int = 0
    bad_first: list = field(default_factory=list)
    texts: list = field(default_factory=list)  # counted with the tokenizer's special tokens (text, prompts)
    plain: list = field(default_factory=list)  # counted without them (completions: they follow their prompt)
    chats: list = field(default_factory=list)

    def add_bad(self, line_no: int, reason: str) -> None:
        self.bad += 1
        if len(self.bad_first) < MAX_BAD_SHOWN:
            self.bad_first.append((line_no, reason))

    def add_parts(self, obj: dict, kind: str | None) -> None:
        """Put a valid record's parts where the token counter wants them."""
        if kind == "chat":
            self.chats.append(chat_messages(obj))
        elif kind == "text":
            self.texts.append(obj["text"])
        else:
            prompt, completion = pair_parts(obj)
            self.texts.append(prompt)
            self.plain.append(completion)


def parse_block(data: bytes, *, at_file_start: bool = False, counter=None,
                skip_bad_lines: bool = True) -> BlockResult:
    """Parse a block of whole lines: record ids (sorted, unique), counts, bad lines, tokens.

    ``counter`` (a :class:`lineagestore.data.tokens.TokenCounter`) counts tokens of the valid records.
    With ``skip_bad_lines=False`` the tokens are not counted once a bad line is seen (the file
    will be refused anyway).
    """
    lines, n_lines = _block_lines(data, at_file_start)
    tally = _Tally(collect=counter is not None)
    _parse_lines(lines, n_lines, tally)
    tokens = None
    if counter is not None and (skip_bad_lines or not tally.bad):
        tokens = counter.count(tally.texts, tally.chats, tally.plain)
    n = len(tally.ids)
    arr = sort_unique(np.frombuffer(b"".join(tally.ids), dtype=ID_DTYPE))
    return BlockResult(arr.tobytes(), n_lines, n, n - tally.chat, tally.chat, tally.bad, tally.bad_first, tokens)


def _block_lines(data: bytes, at_file_start: bool) -> tuple[list, int]:
    """The lines of a block and how many there are (the empty piece after a final newline is no line).

    A line is a ``str``, or the ``UnicodeDecodeError`` of a line that is not UTF-8. A byte order
    mark at the start of the file is dropped.
    """
    try:
        lines: list = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = []
        for raw in data.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                lines.append(e)
    n_lines = len(lines) - 1 if data.endswith(b"\n") else len(lines)
    if at_file_start and n_lines and type(lines[0]) is str and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines, n_lines


def _parse_lines(lines: list, n_lines: int, tally: _Tally) -> None:
    """Add each line's record id (and parts) to ``tally``, or count it as bad; blank lines are skipped."""
    scan = PARSER.scan
    b3 = blake3.blake3
    add_id = tally.ids.append
    collect = tally.collect
    id_bytes = ID_BYTES
    for i in range(n_lines):
        line = lines[i]
        if type(line) is not str:
            tally.add_bad(i + 1, f"not valid UTF-8 (byte 0x{line.object[line.start]:02x} "
                                 f"at column {line.start + 1})")
            continue
        # the hot path: one JSON object filling the line; anything else goes to _parse_line for its message
        try:
            obj, end = scan(line, 0)
        except (StopIteration, ValueError, RecursionError):
            obj = None
        if type(obj) is dict and (end == len(line) or (end == len(line) - 1 and line[end] == "\r")) \
                and not too_deep(line, obj):
            if "messages" in obj:
                kind, reason = record_kind(obj)
            elif type(obj.get("text")) is str:
                kind, reason = "text", None
            else:
                kind, reason = record_kind(obj)
            if reason is None:
                try:
                    canon = canon_plain(obj) if "\\" not in line else canon_escaped(obj)
                    add_id(b3(canon.encode()).digest(id_bytes))
                except (ValueError, RecursionError):
                    pass  # NaN, Infinity, lone surrogates: _parse_line says which
                else:
                    if kind == "chat":
                        tally.chat += 1
                    if collect:
                        tally.add_parts(obj, kind)
                    continue
        _parse_line(line, i + 1, tally)


def _parse_line(line: str, line_no: int, tally: _Tally) -> None:
    """The careful path for a line the hot path did not take: a record, a blank line, or why it is bad."""
    rec, reason = PARSER.parse(line)
    if rec is None:  # then with the reason, unless the line is blank
        if reason is not None and line.strip(" \t\r"):
            tally.add_bad(line_no, reason)
        return
    rid, obj = rec
    kind, reason = record_kind(obj)
    if reason is not None:
        tally.add_bad(line_no, reason)
        return
    tally.ids.append(rid)
    if kind == "chat":
        tally.chat += 1
    if tally.collect:
        tally.add_parts(obj, kind)
