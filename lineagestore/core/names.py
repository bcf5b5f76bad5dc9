"""Rules for names: version names, branches, tags, remotes, and the entries of stored trees.

Names users give are close to ``git check-ref-format``: letters, digits, ``.``, ``_``, ``-``; no
path separators, no ``..``, no control characters, no leading ``-`` or ``.``, no trailing
``.lock``, bounded length. A name therefore never builds a path outside the folder it is stored in.

Tree entries (file and folder names of a stored model) are freer, but a tree read from outside
(a remote, a copied store) is untrusted: :func:`tree_entry_problems` is the one rule fetch, fsck
and checkout apply (docs/format.md, "Tree entry names").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .errors import InvalidName

MAX_NAME = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"^v(\d{3,})_([A-Za-z0-9][A-Za-z0-9._-]*)$")
RESERVED = {"HEAD", "head", "FETCH_HEAD", "ORIG_HEAD"}


def check_name(name: str, what: str = "name") -> str:
    # the common case in one regex match (fsck checks 100,000s of ref names); errors say why below
    if (type(name) is str and len(name) <= MAX_NAME and _NAME_RE.match(name) and ".." not in name
            and not name.endswith((".lock", ".")) and name not in RESERVED):
        return name
    if not isinstance(name, str) or not name:
        raise InvalidName(f"invalid {what}: empty")
    shown = name if len(name) <= 60 else name[:57] + "..."
    if len(name) > MAX_NAME:
        raise InvalidName(f"invalid {what} {shown!r}: longer than {MAX_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName(f"invalid {what} {shown!r}: contains control characters")
    if "/" in name or "\\" in name:
        raise InvalidName(f"invalid {what} {shown!r}: path separators are not allowed")
    if ".." in name:
        raise InvalidName(f"invalid {what} {shown!r}: '..' is not allowed")
    if name.endswith(".lock") or name.endswith("."):
        raise InvalidName(f"invalid {what} {shown!r}: may not end with '.lock' or '.'")
    if name in RESERVED:
        raise InvalidName(f"invalid {what} {shown!r}: reserved")
    if not _NAME_RE.match(name):
        raise InvalidName(f"invalid {what} {shown!r}: use letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit")
    return name


def version_name(number: int, slug: str) -> str:
    return f"v{number:03d}_{slug}"


def parse_version(name: str) -> tuple[int, str] | None:
    m = VERSION_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def slug_from_user(name: str, next_number: int) -> str:
    """The slug for a new version from ``--name``; ``v005_x`` is accepted when 005 is next."""
    check_name(name, "version name")
    parsed = parse_version(name)
    if parsed is None:
        if re.match(r"^v\d+$", name):
            raise InvalidName(f"invalid version name {name!r}: give a descriptive name; "
                              "lin adds the vNNN_ prefix")
        return name
    number, slug = parsed
    if number != next_number:
        raise InvalidName(f"version name {name!r} does not match the next number in this store "
                          f"({version_name(next_number, slug)}); pass --name {slug}")
    return slug


def check_version_name(name: str, what: str = "version name") -> str:
    """A full version name, ``vNNN_slug`` (what a commit object carries as its ``name``)."""
    check_name(name, what)
    if parse_version(name) is None:
        raise InvalidName(f"invalid {what} {name!r}: not of the form vNNN_name")
    return name


# ------------------------------------------------------------------------------ tree entries

#: folders a stored tree may not hold at any depth: a checkout would write into a lineage store
#: or a git repository (its config and hooks run code)
RESERVED_ENTRIES = frozenset({".lineage", ".git"})
#: their 8.3 short names on Windows filesystems
_SHORT_NAMES = frozenset({"git~1", "lineag~1"})
MAX_ENTRY_BYTES = 255  # a file name on ext4, xfs, btrfs, APFS
#: code points HFS+ ignores in names (git's list, CVE-2014-9390): ".g\u200cit" is ".git" there
_IGNORABLE = dict.fromkeys([*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070), 0xFEFF])
_PLAIN = re.compile(r"^[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@ -]*$")


def _folded(name: str) -> str:
    """``name`` as a case-folding filesystem compares it: letter case, HFS+'s ignorable code
    points and (Windows) trailing dots and spaces do not count."""
    return name.translate(_IGNORABLE).rstrip(". ").casefold()


def is_reserved_entry(name: str) -> bool:
    """Whether ``name`` is ``.lineage`` or ``.git`` as a case-folding filesystem would see it."""
    folded = _folded(name)
    return folded in RESERVED_ENTRIES or folded in _SHORT_NAMES


def tree_entry_problem(name: object) -> str | None:
    """Why ``name`` may not name an entry of a stored tree, or None when it may."""
    if type(name) is str and _PLAIN.match(name) and len(name) <= MAX_ENTRY_BYTES:
        return None  # the common case: ASCII, no leading dot, fits
    if not isinstance(name, str):
        return "is not a string"
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "holds a control character"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > MAX_ENTRY_BYTES:
        return f"is longer than {MAX_ENTRY_BYTES} bytes"
    if is_reserved_entry(name):
        return ("would write into a store or a git repository (.lineage and .git are refused in any "
                "letter case)")
    return None


def tree_entry_problems(names: Iterable[object]) -> list[tuple[object, str]]:
    """(name, why) for each entry name of one tree that breaks the rules, duplicates included."""
    out: list[tuple[object, str]] = []
    seen: set[object] = set()
    for name in names:
        why = tree_entry_problem(name)
        if why is None and name in seen:
            why = "appears twice"
        if why is not None:
            out.append((name, why))
        seen.add(name if isinstance(name, str) else repr(name))
    return out


def check_tree_entries(names: Iterable[object], where: str, hint: str | None = None) -> None:
    """Raise InvalidName naming ``where`` (the tree) and the first entry that breaks the rules."""
    bad = tree_entry_problems(names)
    if bad:
        name, why = bad[0]
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
        more = f" ({len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InvalidName(f"{where}: entry {shown!r} {why}{more}", hint=hint)
