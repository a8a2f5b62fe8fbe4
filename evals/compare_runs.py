"""Paired comparison of two eval runs of the same samples (e.g. the local backend against llamacpp):
per mode, EM / ES with bootstrap 95% intervals for each run and the paired tests of evals/report.py
(McNemar on EM, bootstrap CI and permutation p on the ES difference), on the task ids both answered.

    python -m titans_lsp.evals.compare_runs --a DIR_A --a-name local --b DIR_B --b-name llamacpp \
        --modes none,concat [--out FILE.md]

Each DIR holds ``predictions-<mode>.jsonl`` as written by ``titans-lsp eval --out DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from titans_lsp.evals.report import _fmt, paired_test, summarize
from titans_lsp.evals.runner import predictions_path, read_predictions


def compare(dir_a: Path, dir_b: Path, name_a: str, name_b: str, modes: list[str], seed: int = 0) -> str:
    """The markdown table: one row per run and mode (on the shared ids), then the paired tests."""
    rows, tests = [], []
    for mode in modes:
        a, b = read_predictions(predictions_path(dir_a, mode)), read_predictions(predictions_path(dir_b, mode))
        shared = sorted(set(a) & set(b))
        if not shared:
            raise SystemExit(f"{mode}: no task ids in both {dir_a} and {dir_b}")
        a, b = {i: a[i] for i in shared}, {i: b[i] for i in shared}
        summary = summarize({name_a: a, name_b: b}, seed)
        for name in (name_a, name_b):
            e = summary[name]
            rows.append(f"| {mode} | {name} | {_fmt(e, 'em')} | {_fmt(e, 'es')} | {e['n']} | {e['seconds_per_sample']:.2f} |")
        t = paired_test(a, b, seed)
        lo, hi = t["es_diff_ci95"]
        tests.append(f"| {mode}: {name_b} vs {name_a} | {t['n']} | {0.0 - t['em_diff']:+.1f} | {t['em_only_second']} / "
                     f"{t['em_only_first']} | {t['em_mcnemar_p']:.3g} | {0.0 - t['es_diff']:+.1f} [{0.0 - hi:+.1f}, {0.0 - lo:+.1f}] | "
                     f"{t['es_permutation_p']:.3g} | {t['same_prediction']} |")
    return "\n".join([
        f"Runs: {name_a} = `{dir_a}`, {name_b} = `{dir_b}` (rows on the task ids both answered; percent, bootstrap 95% CI).",
        "", "| Mode | Run | EM (%) | Edit Sim (%) | n | s/sample |", "|---|---|---|---|---|---|", *rows, "",
        f"| Pair | n | EM diff | only {name_b} / only {name_a} right | McNemar p | ES diff [95% CI] | permutation p | same prediction |",
        "|---|---|---|---|---|---|---|---|", *tests, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, required=True)
    parser.add_argument("--a-name", default="a")
    parser.add_argument("--b-name", default="b")
    parser.add_argument("--modes", default="none,concat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    table = compare(args.a, args.b, args.a_name, args.b_name, [m.strip() for m in args.modes.split(",") if m.strip()], args.seed)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
