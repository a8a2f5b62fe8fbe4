"""Compare the before/after predictions of the Python dev subset field by field (exit 1 on a difference)."""
import json
import sys
from pathlib import Path

here = Path(__file__).parent
fields = ["prediction", "raw", "text", "context", "reference", "em", "es", "id_em", "id_f1", "prompt_tokens"]
bad = 0
for mode in ("none", "concat"):
    rows = {}
    for side in ("before", "after"):
        rows[side] = {json.loads(l)["task_id"]: json.loads(l) for l in (here / side / f"predictions-{mode}.jsonl").open()}
    assert rows["before"].keys() == rows["after"].keys()
    diff = [(t, f) for t in rows["before"] for f in fields if rows["before"][t][f] != rows["after"][t][f]]
    print(f"{mode}: {len(rows['before'])} samples, {len(diff)} differing fields {diff[:5]}")
    bad += len(diff)
sys.exit(1 if bad else 0)
