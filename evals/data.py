"""Reading CrossCodeEval-format JSONL files (official files of any retrieval variant, or ours)."""

from __future__ import annotations

import gzip
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED = ("prompt", "groundtruth", "metadata")


@dataclass
class Dataset:
    samples: list[dict]
    problems: list[str] = field(default_factory=list)  # "line N: why" for every skipped line


def task_id(sample: dict) -> str:
    return str(sample["metadata"]["task_id"])


def _problem(record) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(record["prompt"], str) or not isinstance(record["groundtruth"], str):
        return "prompt/groundtruth not strings"
    if not isinstance(record["metadata"], dict) or "task_id" not in record["metadata"]:
        return "metadata.task_id missing"
    cfc = record.get("crossfile_context")
    if cfc is not None and not (isinstance(cfc, dict) and isinstance(cfc.get("list", []), list)):
        return "crossfile_context is not {text, list}"
    return None


GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: str | Path) -> bool:
    """By content, not name: a plain file called ``.jsonl.gz`` (or a gzip without the suffix) still reads."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_samples(path: str | Path) -> Dataset:
    """Every well-formed record of ``path`` (JSONL, or gzipped JSONL); malformed lines are logged with
    their number and skipped."""
    samples, problems, seen = [], [], set()
    opener = gzip.open if _is_gzip(path) else open  # committed dev sets are gzipped
    with opener(path, "rb") as f:  # bytes: one line of invalid UTF-8 is skipped, not fatal
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"line {number}: invalid UTF-8 at byte {exc.start}")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: invalid JSON ({exc.msg})")
                continue
            why = _problem(record)
            if why is None and task_id(record) in seen:
                why = f"duplicate task_id {task_id(record)}"
            if why is not None:
                problems.append(f"line {number}: {why}")
                continue
            seen.add(task_id(record))
            samples.append(record)
    for problem in problems:
        log.warning("%s: skipped %s", path, problem)
    return Dataset(samples, problems)


def select(samples: list[dict], limit: int | None, seed: int) -> list[dict]:
    """A seeded random subset of ``limit`` samples (file order kept), or all of them. The subsets
    nest: a larger ``limit`` with the same seed contains the smaller one, so a resumed run grows."""
    if limit is None or limit >= len(samples):
        return list(samples)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    keep = set(order[:limit])
    return [s for i, s in enumerate(samples) if i in keep]


def crossfile_chunks(sample: dict) -> list[tuple[str, str]]:
    """(filename, chunk text) of the sample's given cross-file context, rank order."""
    cfc = sample.get("crossfile_context") or {}
    return [(str(c.get("filename", "")), str(c.get("retrieved_chunk", ""))) for c in cfc.get("list", []) or []
            if isinstance(c, dict) and c.get("retrieved_chunk")]
