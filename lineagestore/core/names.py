"""Rules for names users give: version names, branches, tags, remotes.

Close to ``git check-ref-format``: letters, digits, ``.``, ``_``, ``-``; no path separators, no
``..``, no control characters, no leading ``-`` or ``.``, no trailing ``.lock``, bounded length.
A name therefore never builds a path outside the folder it is stored in.
"""

from __future__ import annotations

import re

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
