"""Recall through the model: can a primed memory make the LM complete values it cannot guess?

The positive control at the level of completions. Each workspace is ``--files`` generated Python
files defining random constants (pronounceable random names; 8-character random strings and
5-digit integers), primed into a fresh memory in order. For every constant, a prompt in another
file needs its value::

    import settings_zorvex

    def test_plimba_token():
        assert settings_zorvex.PLIMBA_TOKEN == "

The defining file is never in the prompt (it is beyond the attention window), so the base model can
only guess. A fact counts as recalled when the completion starts with the exact value followed by
its delimiter. A graded measure next to it: the mean negative log-likelihood (nats per token) of the
value and its delimiter, teacher-forced after the same prompt. Variants (``--variants``):

- ``ablation``: the patched model with its gates shut (the base model; memory not read);
- ``sgd`` / ``titans``: the Titans memory (MemoryConfig defaults with that update rule), read in ``memory`` mode;
- ``ntp``: the next-token test-time-training rule (model/ntp.py), ``--ntp-config`` overrides its fields;
- ``concat``: no memory, the defining file given as the retrieved cross-file block (oracle retrieval);
- ``hybrid-ntp``: ntp memory and that block together.

Retention vs distance: a fact's distance is the number of tokens primed after its file in the
workspace (the files after it), reported per file position. ``--prime-passes 2`` primes every
workspace's files twice in order (a replay); distances count the last pass.

    /work/bin/cpu-slot python -m titans_lsp.evals.memory_recall --model default --threads 1 \\
        --out evals/results/2026-12-02-memory-variants/recall
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

VARIANTS = ("ablation", "sgd", "titans", "ntp", "concat", "hybrid-ntp")
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
KINDS = {"TOKEN": "str", "KEY": "str", "SECRET": "str", "PORT": "int", "LIMIT": "int", "SEED": "int"}
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
DEFAULT_NTP = {"ntp_steps": 1}


@dataclass
class Fact:
    module: str
    name: str
    value: str
    kind: str  # "str" | "int"
    position: int  # the defining file's index in its workspace

    def prompt(self) -> str:
        quote = '"' if self.kind == "str" else ""
        return (f"import {self.module}\n\n\ndef test_{self.name.lower()}():\n"
                f"    assert {self.module}.{self.name} == {quote}")

    def recalled(self, completion: str) -> bool:
        """The exact value, then its delimiter (a closing quote; a non-digit after an integer)."""
        if self.kind == "str":
            return completion.startswith(self.value + '"')
        match = re.match(r"\d+", completion)
        return match is not None and match.group() == self.value


@dataclass
class FactFile:
    module: str
    text: str
    facts: list[Fact] = field(default_factory=list)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables))


def make_workspace(rng: random.Random, files: int, facts_per_file: int) -> list[FactFile]:
    """``files`` defining files with ``facts_per_file`` random constants each (names unique in the workspace)."""
    used: set[str] = set()
    out = []
    for position in range(files):
        service = _word(rng, 3)
        module = f"settings_{service}"
        lines = [f'"""Settings of the {service} service."""', ""]
        made = FactFile(module, "")
        while len(made.facts) < facts_per_file:
            suffix = rng.choice(sorted(KINDS))
            name = f"{_word(rng, 3).upper()}_{suffix}"
            if name in used:
                continue
            used.add(name)
            kind = KINDS[suffix]
            if kind == "str":
                value = "".join(rng.choice(ALPHABET) for _ in range(8))
                lines.append(f'{name} = "{value}"')
            else:
                value = str(rng.randint(10000, 99999))
                lines.append(f"{name} = {value}")
            made.facts.append(Fact(module, name, value, kind, position))
        made.text = "\n".join(lines) + "\n"
        out.append(made)
    return out


def variant_setup(variant: str, ntp_overrides: dict):
    """(MemoryConfig or None, mode name, whether the defining file is the cross-file block)."""
    from titans_lsp.model.memory import MemoryConfig

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose from {', '.join(VARIANTS)}")
    if variant in ("ntp", "hybrid-ntp", "ablation"):
        config = MemoryConfig(update_rule="ntp", **{**DEFAULT_NTP, **ntp_overrides})
    elif variant in ("sgd", "titans"):
        config = MemoryConfig(update_rule=variant)
    else:
        config = None
    mode = {"ablation": "ablation", "concat": "concat", "hybrid-ntp": "hybrid"}.get(variant, "memory")
    return config, mode, variant in ("concat", "hybrid-ntp")


def run_variant(variant: str, workspaces: list[list[FactFile]], model: str, ntp_overrides: dict,
                max_new_tokens: int, passes: int = 1) -> list[dict]:
    """One row per fact: the completion and whether it recalled the value. ``passes``: how many times
    the workspace's files are primed, in order (a replay; distances count the last pass)."""
    from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
    from titans_lsp.modes import Mode
    from titans_lsp.retrieval.index import Snippet

    config, mode_name, with_block = variant_setup(variant, ntp_overrides)
    mode = Mode(mode_name)
    engine = CompletionEngine.load(model, memory_config=config)
    rows = []
    try:
        for w, files in enumerate(workspaces):
            workspace = Workspace()
            prime_s, primed_tokens = 0.0, []
            if mode.primes:
                workspace = Workspace(memory=engine.new_memory_state())
                for _ in range(passes):
                    primed_tokens = []
                    for f in files:
                        start = time.perf_counter()
                        stats = engine.prime(workspace, [f.text])
                        prime_s += time.perf_counter() - start
                        primed_tokens.append(stats.tokens)
            for f in files:
                after = sum(primed_tokens[f.facts[0].position + 1:]) if primed_tokens else 0
                block = [Snippet(filename=f"{f.module}.py", text=f.text)] if with_block else []
                for fact in f.facts:
                    settings = CompletionSettings(mode=mode, max_new_tokens=max_new_tokens)
                    request = CompletionRequest(prefix=fact.prompt(), path=f"test_{f.module}.py", settings=settings,
                                                early_stop=False, snippets=block)
                    completion = engine.complete(request, workspace)
                    raw = completion.raw
                    nll = value_nll(engine, completion.prompt_ids, fact, mode, workspace)
                    rows.append({"variant": variant, "workspace": w, "position": fact.position, "name": fact.name,
                                 "kind": fact.kind, "value": fact.value, "completion": raw[:40],
                                 "recalled": fact.recalled(raw), "value_nll": round(nll, 4), "tokens_after": after,
                                 "prime_s": round(prime_s, 3)})
    finally:
        engine.close()
    return rows


def value_nll(engine, prompt_ids: list[int], fact: Fact, mode, workspace) -> float:
    """Mean NLL (nats/token) of the value and its delimiter after the laid-out prompt, through the
    same model and memory the completion read."""
    import contextlib

    import torch
    import torch.nn.functional as F

    target = engine.tokenizer(fact.value + ('"' if fact.kind == "str" else "\n"), add_special_tokens=False).input_ids
    ids = torch.tensor([list(prompt_ids) + target], device=engine.loaded.device)
    context = (engine.patch.activate(workspace.memory, gates=mode.gates) if mode.uses_memory and engine.patch is not None
               else contextlib.nullcontext())
    with torch.no_grad(), context:
        logits = engine.model(ids, use_cache=False).logits[0, len(prompt_ids) - 1:-1].float()
    return float(F.cross_entropy(logits, torch.tensor(target, device=logits.device)))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def wrong_binding(row: dict, rows: list[dict]) -> bool:
    """The completion is another fact's value from the same workspace: the value was stored, its
    binding to the name was not."""
    others = [r["value"] for r in rows if r["workspace"] == row["workspace"] and r["name"] != row["name"]]
    return not row["recalled"] and any(row["completion"].startswith(v) for v in others)


def summarize(rows_by_variant: dict[str, list[dict]]) -> dict:
    """Recall with Wilson CIs per variant, per file position, wrong bindings, and McNemar against ablation."""
    import numpy as np

    from titans_lsp.evals.report import mcnemar_p

    out: dict = {}
    base = rows_by_variant.get("ablation")
    for variant, rows in rows_by_variant.items():
        k = sum(r["recalled"] for r in rows)
        entry = {"n": len(rows), "recalled": k, "wrong_binding": sum(wrong_binding(r, rows) for r in rows), "rate": k / len(rows) if rows else 0.0, "ci95": wilson(k, len(rows)),
                 "value_nll": float(np.mean([r["value_nll"] for r in rows])) if rows else 0.0, "by_position": {}}
        for position in sorted({r["position"] for r in rows}):
            sub = [r for r in rows if r["position"] == position]
            entry["by_position"][position] = {"n": len(sub), "rate": sum(r["recalled"] for r in sub) / len(sub),
                                              "value_nll": float(np.mean([r["value_nll"] for r in sub])),
                                              "mean_tokens_after": float(np.mean([r["tokens_after"] for r in sub]))}
        if base is not None and variant != "ablation":
            a = np.array([float(r["recalled"]) for r in rows])
            b = np.array([float(r["recalled"]) for r in base])
            only_v, only_ab, p = mcnemar_p(a, b)
            entry["vs_ablation"] = {"only_variant": only_v, "only_ablation": only_ab, "mcnemar_p": p}
        out[variant] = entry
    return out


def table_md(summary: dict) -> str:
    lines = ["| variant | recalled | rate | 95% CI | another fact's value | value NLL (nats/token) | vs ablation (only variant / only ablation, McNemar p) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for variant, e in summary.items():
        vs = e.get("vs_ablation")
        cmp = f"{vs['only_variant']} / {vs['only_ablation']}, p = {vs['mcnemar_p']:.3g}" if vs else "-"
        lines.append(f"| {variant} | {e['recalled']}/{e['n']} | {100 * e['rate']:.1f} % | "
                     f"{100 * e['ci95'][0]:.1f}-{100 * e['ci95'][1]:.1f} | {e['wrong_binding']} | {e['value_nll']:.3f} | {cmp} |")
    positions = sorted({p for e in summary.values() for p in e["by_position"]})
    after = {p: max(e["by_position"][p]["mean_tokens_after"] for e in summary.values()) for p in positions}
    lines += ["", "Recall by the defining file's position (later files are primed after it):", "",
              "| variant | " + " | ".join(f"file {p} (~{after[p]:.0f} tok after)"
                                          for p in positions) + " |",
              "| --- |" + " --- |" * len(positions)]
    for variant, e in summary.items():
        lines.append(f"| {variant} | " + " | ".join(f"{100 * e['by_position'][p]['rate']:.0f} % (NLL {e['by_position'][p]['value_nll']:.2f})"
                                                    for p in positions) + " |")
    return "\n".join(lines) + "\n"


def report_only(paths: list[Path], out: Path) -> int:
    """Merge rows from earlier runs (same seed and sizes: the facts are the same) into one table;
    a variant label seen twice keeps its first rows (each run repeats ablation)."""
    rows_by_variant: dict[str, list[dict]] = {}
    for path in paths:
        seen: dict[str, list[dict]] = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            seen.setdefault(row["variant"], []).append(row)
        for variant, rows in seen.items():
            rows_by_variant.setdefault(variant, rows)
    order = sorted(rows_by_variant, key=lambda v: v != "ablation")
    summary = summarize({v: rows_by_variant[v] for v in order})
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"info": {"merged_from": [str(p) for p in paths]}, "summary": summary},
                                                 indent=2))
    table = table_md(summary)
    (out / "table.md").write_text(table)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--variants", default="ablation,sgd,ntp,concat",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--workspaces", type=int, default=6)
    parser.add_argument("--files", type=int, default=4, help="defining files per workspace (primed in order)")
    parser.add_argument("--facts", type=int, default=4, help="constants per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ntp-config", default="{}", help="JSON of MemoryConfig fields for the ntp variants")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--prime-passes", type=int, default=1, help="prime each workspace's files this many times")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="directory for rows.jsonl, summary.json, table.md")
    parser.add_argument("--report-only", nargs="*", type=Path, default=None, metavar="ROWS",
                        help="no runs: summarize these rows.jsonl files (default: --out's) into --out, ablation first")
    args = parser.parse_args(argv)
    if args.report_only is not None:
        return report_only(args.report_only or [args.out / "rows.jsonl"], args.out)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        parser.error(f"unknown variant(s) {', '.join(bad)}: choose from {', '.join(VARIANTS)}")
    if min(args.workspaces, args.files, args.facts, args.prime_passes) < 1:
        parser.error("--workspaces, --files, --facts and --prime-passes must be positive")
    try:
        ntp_overrides = json.loads(args.ntp_config)
        if not isinstance(ntp_overrides, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        parser.error(f"--ntp-config: {exc}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    workspaces = [make_workspace(rng, args.files, args.facts) for _ in range(args.workspaces)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workspace-0.txt").write_text("\n\n".join(f"# {f.module}.py\n{f.text}" for f in workspaces[0])
                                              + "\n\n# a prompt:\n" + workspaces[0][0].facts[0].prompt() + "\n")
    rows_by_variant = {}
    for variant in variants:
        start = time.perf_counter()
        rows = run_variant(variant, workspaces, args.model, ntp_overrides, args.max_new_tokens, args.prime_passes)
        rows_by_variant[variant] = rows
        k = sum(r["recalled"] for r in rows)
        print(f"{variant:12s} recalled {k}/{len(rows)} ({time.perf_counter() - start:.0f}s)", flush=True)
        with (args.out / "rows.jsonl").open("w") as f:
            for vrows in rows_by_variant.values():
                for r in vrows:
                    f.write(json.dumps(r) + "\n")
    summary = summarize(rows_by_variant)
    info = {"model": args.model, "variants": variants, "workspaces": args.workspaces, "files": args.files,
            "facts": args.facts, "seed": args.seed, "ntp_config": {**DEFAULT_NTP, **ntp_overrides},
            "max_new_tokens": args.max_new_tokens, "prime_passes": args.prime_passes}
    (args.out / "summary.json").write_text(json.dumps({"info": info, "summary": summary}, indent=2))
    table = table_md(summary)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
