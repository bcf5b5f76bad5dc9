"""Write the demo's assets into a folder, offline: a tiny Qwen3 model and two JSONL data files.

    python scripts/make_demo_assets.py DIR

- DIR/base_model/: a randomly initialised Qwen3 (hidden 64, 2 layers, ~3.3M parameters) with the
  GPT-2 tokenizer and a ChatML chat template (tools.samples, from installed packages);
- DIR/bible.jsonl: 200 records of the King James Bible, two verses each ({"text": ...});
- DIR/chat.jsonl: 200 user/assistant conversations ({"messages": [...]});
- DIR/heldout.jsonl: 40 other records of the Bible, the store's evaluation set (never trained);
- DIR/incoming/part_000.jsonl ... part_003.jsonl: 4 x 40 further Bible records, for the queue.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tools/ package

from tools import samples


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    samples.tiny_model_folder(out / "base_model", arch="qwen3", seed=0)
    n_bible = samples.write_jsonl(out / "bible.jsonl", samples.bible_records(0, 200, verses_per_record=2))
    n_chat = samples.write_jsonl(out / "chat.jsonl", samples.chat_records("english", 0, 200))
    n_held = samples.write_jsonl(out / "heldout.jsonl", samples.bible_records(1000, 40, verses_per_record=2))
    parts = out / "incoming"
    parts.mkdir(exist_ok=True)
    for i in range(4):
        samples.write_jsonl(parts / f"part_{i:03d}.jsonl",
                            samples.bible_records(200 + 40 * i, 40, verses_per_record=2))
    print(f"wrote {out / 'base_model'} (tiny Qwen3), {out / 'bible.jsonl'} ({n_bible} records), "
          f"{out / 'chat.jsonl'} ({n_chat} records), {out / 'heldout.jsonl'} ({n_held} records), "
          f"{parts}/ (4 files of 40 records)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
