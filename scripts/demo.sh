#!/usr/bin/env bash
# The lineagestore story on the CPU with a tiny model, offline, in ./demo/ (recreated each time).
#   make demo        (or: bash scripts/demo.sh with `lin` on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/demo"
PY="$(command -v python || command -v python3)"
rm -rf "$DEMO"
mkdir -p "$DEMO"
cd "$DEMO"
unset LIN_STORE
export LIN_LOCK_TIMEOUT=60
START=$SECONDS

step() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# a short CPU training: 64-token blocks, 8 per step, one pass, a checkpoint every 10 steps
TRAIN=(--device cpu --seq-len 64 --batch-size 8 --lr 1e-3 --checkpoint-every 10 --log-every 5)

step "1. Demo assets: a tiny Qwen3 model and two data files, built from installed packages"
run "$PY" "$ROOT/scripts/make_demo_assets.py" .

step "2. Create a store (.lineage/ here)"
run lin init

step "3. Import the base model: it becomes v001_base, the active version"
run lin import base_model --name base --message "tiny Qwen3 base (random init)"

step "4. Register the two data files: fingerprint, examples, tokens, record ids"
run lin data add bible.jsonl --description "King James Bible, 200 records of two verses"
run lin data add chat.jsonl --description "chatterbot English conversations"
run lin eval set heldout.jsonl    # held out: every version is measured on it; it is never trained

step "5. Plan the first training: seven pre-flight checks, name, tokens, steps, time"
run lin plan --data bible.jsonl --name bible "${TRAIN[@]}"

step "6. Train v002_bible on the Bible text (checkpoints go into the store)"
run lin train --data bible.jsonl --name bible "${TRAIN[@]}" --yes

step "7. Train v003_chat on the chat data; the process is killed (kill -9) at step 12"
printf '$ LIN_TEST_KILL_AT=train-step:12 lin train --data chat.jsonl --name chat ... --yes\n'
if LIN_TEST_KILL_AT=train-step:12 lin train --data chat.jsonl --name chat "${TRAIN[@]}" --yes >/dev/null; then
    echo "unexpected: the run was not killed"; exit 1
else
    echo "(the training process died with exit code $?: the last checkpoint is in the store)"
fi
run lin runs
run lin train --resume --device cpu --yes

step "8. The lineage: every version, its data and metrics"
run lin log --graph
run lin show v003

step "9. Try to train on the Bible text again: the plan refuses (already trained in v002)"
printf '$ lin train --data bible.jsonl --name bible_again ... --yes\n'
if lin train --data bible.jsonl --name bible_again "${TRAIN[@]}" --yes; then
    echo "unexpected: training on repeated data was not refused"; exit 1
else
    echo "(refused with exit code $?; nothing was trained, the active version is unchanged)"
fi

step "10. Go back to v002: check it out into ./model and make it active"
run lin checkout v002
run lin status

step "11. Progress toward the token goal, and a full consistency check"
run lin progress
run lin fsck

step "12. Every read verifies: flip one byte of an object in a copy of the store"
cp -r .lineage damaged.lineage
OBJ="$("$PY" - <<'PYEOF'
from lineagestore import Repo
from lineagestore.versions.models import walk_tree
repo = Repo.open("damaged.lineage")
tf = next(f for f in walk_tree(repo.objects, repo.commit(repo.resolve("v001")).tree) if f.type == "tensor-file")
oid = repo.objects.get(tf.id, "tensor-file").entries()[0].id
p = repo.objects.path_for(oid)
p.chmod(0o644)
data = bytearray(p.read_bytes())
data[-1] ^= 0x01
p.write_bytes(bytes(data))
print(oid)
PYEOF
)"
echo "(flipped the last byte of object ${OBJ:0:12}..., a tensor of v001)"
printf '$ lin --store damaged.lineage fsck\n'
if lin --store damaged.lineage fsck; then echo "unexpected: fsck missed the flipped byte"; exit 1; else echo "(fsck: exit code $?)"; fi
printf '$ lin --store damaged.lineage checkout v001 --to damaged_out\n'
if lin --store damaged.lineage checkout v001 --to damaged_out; then echo "unexpected: checkout read a damaged object"; exit 1; else echo "(checkout: exit code $?, nothing written)"; fi
rm -rf damaged.lineage damaged_out

step "13. Continuous training: queue a folder of files, lin run trains them one by one"
run lin checkout main                # back on the branch: lin run trains its tip
run lin queue add incoming/
printf '$ LIN_TEST_KILL_AT=train-step:8 lin run --yes ...   (killed -9 in the middle of a file)\n'
if LIN_TEST_KILL_AT=train-step:8 lin run --yes "${TRAIN[@]}" >/dev/null 2>&1; then
    echo "unexpected: the runner was not killed"; exit 1
else
    echo "(the runner died with exit code $?; its last checkpoint is in the store)"
fi
run lin run --yes "${TRAIN[@]}"    # resumes the interrupted file, then trains the rest
run lin queue ls
run lin repack                       # older versions go into packs as deltas; hot ones stay raw
run lin fsck

step "14. What each token bought: eval-loss gain per billion tokens and per device-hour"
run lin stats

step "15. The dashboard: one HTML file, no network needed (lin serve shows it live)"
run lin report --output report.html

step "Done in $((SECONDS - START))s. The store is in $DEMO/.lineage; try: cd demo && lin log; open demo/report.html"
