"""Which tokenizer a version holds, by id: the files that make a tokenizer and their content ids.

The **tokenizer id** (docs/data.md, "Terms") is the id of the canonical JSON object
``{"tokenizer-files": {file name: content id}}`` over the tokenizer files present
(:data:`TOKENIZER_FILES`), hashed as if it were a blob (it is not stored). The same files give the
same id whether they come from a version or from a folder. Token counts of registered data are
keyed by it, so a version's own count of its data is the one under its tree's tokenizer id.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.errors import LinError
from ..core.ids import hash_object
from ..core.objects import canonical_json
from ..core.store import ObjectStore

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "tokenizer.model", "spiece.model",
    "vocab.json", "merges.txt", "vocab.txt",
)
#: a folder is a tokenizer when it has one of these
CORE_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def tokenizer_id(files: Mapping[str, str]) -> str:
    """The tokenizer id of ``{file name: content id}``."""
    return hash_object("blob", canonical_json({"tokenizer-files": dict(sorted(files.items()))}))


def tree_tokenizer_files(store: ObjectStore, tree_id: str) -> dict[str, str]:
    """``{file name: content id}`` of the tokenizer files at the top of a model tree ({} if none)."""
    tree = store.get(tree_id, "tree")
    files = {e.name: e.id for e in tree.items() if e.name in TOKENIZER_FILES and e.type in ("blob", "chunks")}
    return files if any(n in files for n in CORE_FILES) else {}


def tree_tokenizer_id(store: ObjectStore, tree_id: str) -> str | None:
    """The tokenizer id of a model tree, or None when it has no tokenizer (or cannot be read)."""
    try:
        files = tree_tokenizer_files(store, tree_id)
    except LinError:
        return None
    return tokenizer_id(files) if files else None
