"""Exit 0 when every row of NEW (per mode) has the same prediction and raw output as OLD's row of the
same task id; prints each difference. Usage: check_identical.py OLD_DIR NEW_DIR none,concat"""
import sys
from pathlib import Path

from titans_lsp.evals.runner import predictions_path, read_predictions

old_dir, new_dir, modes = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
same = total = 0
for mode in modes:
    old, new = read_predictions(predictions_path(old_dir, mode)), read_predictions(predictions_path(new_dir, mode))
    for task, row in new.items():
        total += 1
        ref = old.get(task)
        if ref is not None and ref["raw"] == row["raw"] and ref["prediction"] == row["prediction"]:
            same += 1
        else:
            print(f"DIFFERENT {mode} {task}: old {None if ref is None else ref['raw']!r} new {row['raw']!r}")
print(f"{same}/{total} rows identical (raw and prediction) to {old_dir}")
sys.exit(0 if total and same == total else 1)
