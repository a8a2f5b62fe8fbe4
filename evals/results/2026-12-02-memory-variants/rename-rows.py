"""Relabel the ntp rows of recall runs so several ntp configs share one table (session 3).

    python evals/results/2026-12-02-memory-variants/rename-rows.py RUN_DIR LABEL > OUT.jsonl
"""
import json
import sys

run, label = sys.argv[1], sys.argv[2]
for line in open(f"{run}/rows.jsonl"):
    row = json.loads(line)
    if row["variant"] == "ntp":
        row["variant"] = label
        print(json.dumps(row))
