"""results.json, tables.md, analysis.md and figures from the per-mode prediction rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from titans_lsp.evals.definitions import definition_rate
from titans_lsp.evals.metrics import ES_IMPLEMENTATION

METRICS = ("em", "es", "id_em", "id_f1")
SCALE = {"em": 100.0, "es": 1.0, "id_em": 100.0, "id_f1": 100.0}  # per-sample value -> percent
BOOTSTRAP = 2000
PAIRS = (("memory", "ablation"), ("concat", "none"), ("hybrid", "concat"), ("vanilla-concat", "vanilla-none"), ("none", "none-naive"),
         ("concat", "concat-naive"))


def _values(rows: list[dict], metric: str) -> np.ndarray:
    return np.array([float(r[metric]) * SCALE[metric] for r in rows])


def bootstrap_ci(values: np.ndarray, seed: int = 0, n: int = BOOTSTRAP) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean."""
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_permutation_p(a: np.ndarray, b: np.ndarray, seed: int = 0, n: int = 10000) -> float:
    """Two-sided sign-flip permutation test of mean(a - b) = 0 on paired samples."""
    diff = a - b
    observed = abs(diff.mean()) if len(diff) else 0.0
    if not len(diff) or not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n, len(diff)))
    null = np.abs((signs * diff).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (n + 1))


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test on paired 0/1 outcomes: (only a right, only b right, two-sided p)."""
    from math import comb

    only_a = int(np.sum((a > 0) & (b == 0)))
    only_b = int(np.sum((b > 0) & (a == 0)))
    k, m = min(only_a, only_b), only_a + only_b
    if m == 0:
        return only_a, only_b, 1.0
    p = min(1.0, 2 * sum(comb(m, i) for i in range(k + 1)) / 2 ** m)
    return only_a, only_b, p


def summarize(by_label: dict[str, dict[str, dict]], seed: int = 0) -> dict:
    results = {}
    for label, rows_by_id in by_label.items():
        rows = [rows_by_id[k] for k in sorted(rows_by_id)]
        entry = {"n": len(rows)}
        for metric in METRICS:
            vals = _values(rows, metric)
            entry[metric] = float(vals.mean()) if len(vals) else 0.0
            entry[f"{metric}_ci95"] = list(bootstrap_ci(vals, seed))
        secs = [r["seconds"] for r in rows]
        entry["seconds_per_sample"] = float(np.mean(secs)) if secs else 0.0
        rate = definition_rate(rows) if any(r.get("context") for r in rows) else None
        if rate is not None:  # the block holds the definition of the symbol to complete
            entry["definition_in_block"], entry["definition_measured"] = rate
        retrievers = {r.get("retriever") for r in rows} - {None}
        if retrievers:
            entry["retriever"] = sorted(retrievers)[0]
        results[label] = entry
    return results


REFERENCE_RETRIEVER = "rg1-bm25"  # rows with another retriever are tested against this one's


def retriever_pairs(by_label: dict[str, dict[str, dict]]) -> list[tuple[str, str]]:
    """(label, its rg1-bm25 reference label) for every row set retrieved by another retriever."""
    pairs = []
    for label, rows in by_label.items():
        retriever = next((r.get("retriever") for r in rows.values() if r.get("retriever")), None)
        tag = retriever.replace(",", "+") if retriever else None
        if tag and tag != REFERENCE_RETRIEVER and label.endswith(f"-{tag}"):
            reference = label[:-len(tag)] + REFERENCE_RETRIEVER
            if reference in by_label:
                pairs.append((label, reference))
    return pairs


def paired_tests(by_label: dict[str, dict[str, dict]], seed: int = 0) -> dict:
    pairs = [(a, b) for a, b in PAIRS if a in by_label and b in by_label] + retriever_pairs(by_label)
    return {f"{a} vs {b}": paired_test(by_label[a], by_label[b], seed) for a, b in pairs}


def paired_test(rows_a: dict[str, dict], rows_b: dict[str, dict], seed: int = 0) -> dict:
    """EM (McNemar) and ES (bootstrap CI of the difference, sign-flip permutation) on the task ids
    both runs answered; rows keyed by task id."""
    ids = sorted(set(rows_a) & set(rows_b))
    ra, rb = [rows_a[i] for i in ids], [rows_b[i] for i in ids]
    em_a, em_b = _values(ra, "em"), _values(rb, "em")
    only_a, only_b, p_em = mcnemar_p(em_a, em_b)
    es_a, es_b = _values(ra, "es"), _values(rb, "es")
    return {
        "n": len(ids), "em_diff": float((em_a - em_b).mean()) if ids else 0.0, "em_only_first": only_a,
        "em_only_second": only_b, "em_mcnemar_p": p_em, "es_diff": float((es_a - es_b).mean()) if ids else 0.0,
        "es_diff_ci95": list(bootstrap_ci(es_a - es_b, seed)), "es_permutation_p": paired_permutation_p(es_a, es_b, seed),
        "same_prediction": int(sum(x["prediction"] == y["prediction"] for x, y in zip(ra, rb))),
    }


def _fmt(entry: dict, metric: str) -> str:
    lo, hi = entry[f"{metric}_ci95"]
    return f"{entry[metric]:.1f} [{lo:.1f}, {hi:.1f}]"


def tables_md(results: dict, tests: dict, info: dict) -> str:
    memory_note = info.get("memory_note", "")
    lines = [f"# CrossCodeEval results: {info.get('data', '')}", "",
             f"Model: {info.get('model', '')}. Samples: {info.get('n', '')}. Greedy, {info.get('max_new_tokens', 50)} new "
             f"tokens, cross-file block <= {info.get('context_budget', 512)} tokens, window {info.get('max_seq', 2048)} "
             f"(reference: 512 / 2048). Numbers in percent with bootstrap 95% intervals.",
             f"Edit similarity: {ES_IMPLEMENTATION}.", ""]
    if memory_note:
        lines += [f"**{memory_note}**", ""]

    def block(title: str, labels: list[str]) -> None:
        present = [lab for lab in labels if lab in results]
        if not present:
            return
        lines.extend([f"## {title}", "", "| Mode | EM (%) | Edit Sim (%) | ID-EM | ID-F1 | n | s/sample |",
                      "|---|---|---|---|---|---|---|"])
        for lab in present:
            e = results[lab]
            lines.append(f"| {lab} | {_fmt(e, 'em')} | {_fmt(e, 'es')} | {_fmt(e, 'id_em')} | {_fmt(e, 'id_f1')} | "
                         f"{e['n']} | {e['seconds_per_sample']:.2f} |")
        lines.append("")

    block("Memory-patched model" + (" (memory UNTRAINED)" if info.get("memory_untrained") else ""),
          ["memory", "ablation", "hybrid", "concat", "none"])
    block("Vanilla model (no memory patch)", ["vanilla-concat", "vanilla-none"])
    block("Token boundaries: naive pipeline (no token healing)", ["concat-naive", "none-naive"])
    by_retriever = [lab for lab in results if results[lab].get("retriever")]
    if by_retriever:
        lines.extend(["## By retriever", "", "Definition in block: the block holds a line defining the symbol to "
                      "complete, from the file that defines it.", "",
                      "| Row | retriever | EM (%) | Edit Sim (%) | definition in block (%) | n | s/sample |",
                      "|---|---|---|---|---|---|---|"])
        for lab in by_retriever:
            e = results[lab]
            recall = f"{100 * e['definition_in_block']:.1f}" if "definition_in_block" in e else "-"
            lines.append(f"| {lab} | {e['retriever']} | {_fmt(e, 'em')} | {_fmt(e, 'es')} | {recall} | {e['n']} | "
                         f"{e['seconds_per_sample']:.2f} |")
        lines.append("")
    if tests:
        lines.extend(["## Paired tests", "", "| Pair | n | EM diff | only first / only second right | McNemar p | "
                      "ES diff [95% CI] | permutation p | same prediction |", "|---|---|---|---|---|---|---|---|"])
        for name, t in tests.items():
            lo, hi = t["es_diff_ci95"]
            lines.append(f"| {name} | {t['n']} | {t['em_diff']:+.1f} | {t['em_only_first']} / {t['em_only_second']} | "
                         f"{t['em_mcnemar_p']:.3g} | {t['es_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}] | "
                         f"{t['es_permutation_p']:.3g} | {t['same_prediction']} |")
        lines.append("")
    return "\n".join(lines)


def analysis_md(by_label: dict[str, dict[str, dict]]) -> str:
    lines = ["# Per-sample analysis", ""]
    if "memory" in by_label and "ablation" in by_label:
        ids = sorted(set(by_label["memory"]) & set(by_label["ablation"]))
        same = sum(by_label["memory"][i]["prediction"] == by_label["ablation"][i]["prediction"] for i in ids)
        same_raw = sum(by_label["memory"][i]["raw"] == by_label["ablation"][i]["raw"] for i in ids)
        lines += [f"memory and ablation share {same} of {len(ids)} post-processed predictions ({same_raw} raw).", ""]
    if "concat" in by_label:
        others = [lab for lab in by_label if lab != "concat" and not lab.startswith("vanilla-")]
        wins = [i for i in sorted(by_label["concat"]) if by_label["concat"][i]["em"]
                and all(not by_label[o].get(i, {}).get("em", 0) for o in others)]
        lines += [f"## Samples concat gets right and {', '.join(others) or 'no other mode'} miss ({len(wins)})", ""]
        for i in wins:
            row = by_label["concat"][i]
            lines.append(f"- `{i}` cross-file symbol `{row.get('crossfile_symbol')}`; reference `{row['reference'].strip()}`")
            for o in others:
                if i in by_label[o]:
                    lines.append(f"  - {o}: `{by_label[o][i]['prediction'].strip()}`")
        lines.append("")
    return "\n".join(lines)


def figures(results: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    written = []
    for metric, title in (("em", "Exact match (%)"), ("es", "Edit similarity (%)")):
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(labels)), 3.2))
        means = [results[lab][metric] for lab in labels]
        lo = [results[lab][metric] - results[lab][f"{metric}_ci95"][0] for lab in labels]
        hi = [results[lab][f"{metric}_ci95"][1] - results[lab][metric] for lab in labels]
        ax.bar(range(len(labels)), means, yerr=[lo, hi], capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_ylabel(title)
        ax.set_title(f"{title}, bootstrap 95% CI")
        fig.tight_layout()
        name = f"{metric}.png"
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


def write_reports(by_label: dict[str, dict[str, dict]], out_dir: Path, info: dict, seed: int = 0) -> dict:
    results = summarize(by_label, seed)
    tests = paired_tests(by_label, seed)
    # Top level: one entry per mode label (other tools read results[mode]["em"]), plus info and tests.
    payload = {**results, "info": {**info, "es_implementation": ES_IMPLEMENTATION}, "paired_tests": tests}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / "tables.md").write_text(tables_md(results, tests, info))
    (out_dir / "analysis.md").write_text(analysis_md(by_label))
    figures(results, out_dir)
    return payload
