"""Positive control for the Titans memory (the study did not run one).

On held-out repositories: prime the memory with a repository's earlier files, then measure the
next-token loss on its later files with the memory read (gates open) and with the ablation (gates
shut: the frozen base), for the untrained memory (fresh initialisation) and the trained checkpoint.
If the memory carries anything useful from earlier files, ``ablation - memory`` is positive.
Confidence intervals: percentile bootstrap over repositories (files of one repository are not
independent), token-weighted.

  python -m titans_lsp.evals.positive_control --trained runs/smollm2 --out evals/results/.../positive_control
  (held-out repositories default to the training run's held-out set in RUN/data.json)
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class RepoLosses:
    name: str
    tokens: int
    loss: dict[str, float]  # condition -> token-weighted mean loss on the later files


@torch.no_grad()
def repo_losses(model, patch, tokenizer, files: list[list[int]], prime_fraction: float, chunk_tokens: int = 512,
                conditions: dict[str, str] | None = None) -> tuple[dict[str, float], int]:
    """Prime on the first ``prime_fraction`` of the files (at least one), then the token-weighted loss on the rest
    for each condition name -> gates ("open" or "shut"). Only the current patch parameters are used."""
    from titans_lsp.model.training import file_loss

    conditions = conditions or {"memory": "open", "ablation": "shut"}
    k = min(len(files) - 1, max(1, int(round(prime_fraction * len(files)))))
    state = patch.new_state()
    patch.prime(state, files[:k], tokenizer, chunk_tokens=chunk_tokens)
    totals = {c: 0.0 for c in conditions}
    tokens = 0
    for ids in files[k:]:
        for c, gates in conditions.items():
            loss, n = file_loss(model, patch, state, ids, gates=gates)
            totals[c] += loss.item() * n
        tokens += len(ids) - 1
    return {c: t / max(tokens, 1) for c, t in totals.items()}, tokens


def bootstrap_delta(repos: list[RepoLosses], a: str, b: str, samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Token-weighted mean of loss[a] - loss[b] and its 95% percentile bootstrap interval over repositories."""
    def weighted(sample: list[RepoLosses]) -> float:
        total = sum(r.tokens for r in sample)
        return sum((r.loss[a] - r.loss[b]) * r.tokens for r in sample) / max(total, 1)

    point = weighted(repos)
    rng = random.Random(seed)
    stats = sorted(weighted([rng.choice(repos) for _ in repos]) for _ in range(samples))
    return point, stats[int(0.025 * samples)], stats[min(samples - 1, int(0.975 * samples))]


def run_control(model, patch, tokenizer, repos: list[tuple[str, list[list[int]]]], trained_dir: str | Path | None,
                prime_fraction: float = 0.5, samples: int = 2000, seed: int = 0) -> dict:
    """Per-repository losses for untrained memory, trained memory and ablation, plus bootstrap CIs.
    ``patch`` must hold the untrained (fresh) parameters when called; they are restored at the end."""
    results: list[RepoLosses] = []
    with tempfile.TemporaryDirectory() as tmp:
        patch.save_parameters(tmp)  # the untrained parameters
        for name, files in repos:
            if len(files) < 2:
                continue
            losses, tokens = repo_losses(model, patch, tokenizer, files, prime_fraction,
                                         conditions={"untrained": "open", "ablation": "shut"})
            results.append(RepoLosses(name, tokens, losses))
        if trained_dir is not None:
            patch.load_parameters(trained_dir)
            for r, (name, files) in zip(results, [(n, f) for n, f in repos if len(f) >= 2]):
                losses, _ = repo_losses(model, patch, tokenizer, files, prime_fraction, conditions={"trained": "open"})
                r.loss |= losses
            patch.load_parameters(tmp)
    if not results:
        raise ValueError("no repository with two or more files to run the positive control on")
    conditions = ["ablation", "untrained"] + (["trained"] if trained_dir is not None else [])
    table = {}
    for c in conditions:
        total = sum(r.tokens for r in results)
        mean = sum(r.loss[c] * r.tokens for r in results) / total
        row = {"loss": mean}
        if c != "ablation":
            d, lo, hi = bootstrap_delta(results, "ablation", c, samples, seed)
            row |= {"gain_vs_ablation": d, "ci95": [lo, hi]}
        table[c] = row
    if trained_dir is not None:
        d, lo, hi = bootstrap_delta(results, "untrained", "trained", samples, seed)
        table["trained"] |= {"gain_vs_untrained": d, "ci95_vs_untrained": [lo, hi]}
    return {"conditions": table, "repositories": [vars(r) for r in results], "prime_fraction": prime_fraction,
            "bootstrap_samples": samples, "tokens": sum(r.tokens for r in results)}


def markdown(result: dict) -> str:
    lines = ["| condition | loss (nats/token) | gain vs ablation [95% CI] | gain vs untrained [95% CI] |",
             "| --- | --- | --- | --- |"]
    for c, row in result["conditions"].items():
        gain = f"{row['gain_vs_ablation']:+.4f} [{row['ci95'][0]:+.4f}, {row['ci95'][1]:+.4f}]" if "ci95" in row else "-"
        gu = (f"{row['gain_vs_untrained']:+.4f} [{row['ci95_vs_untrained'][0]:+.4f}, {row['ci95_vs_untrained'][1]:+.4f}]"
              if "ci95_vs_untrained" in row else "-")
        lines.append(f"| {c} | {row['loss']:.4f} | {gain} | {gu} |")
    lines.append("")
    lines.append(f"{len(result['repositories'])} held-out repositories, {result['tokens']} scored tokens; memory primed on "
                 f"the first {result['prime_fraction']:.0%} of each repository's files, loss on the rest; "
                 f"percentile bootstrap over repositories ({result['bootstrap_samples']} samples). Gain = loss reduction.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model (default: the training run's model, else 'default')")
    parser.add_argument("--trained", default=None, help="trained memory checkpoint (a `titans-lsp train --out` directory)")
    parser.add_argument("--data", nargs="*", default=[], help="held-out repository directories")
    parser.add_argument("--pypi", nargs="*", default=[], help="held-out pinned PyPI packages")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per file (default: the run's)")
    parser.add_argument("--max-files", type=int, default=16, help="files per repository (definitions-first)")
    parser.add_argument("--prime-fraction", type=float, default=0.5)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", required=True, help="directory for positive_control.json and .md")
    args = parser.parse_args(argv)

    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory, load_memory_config
    from titans_lsp.model.training_data import load_repositories, load_sources, tokenize_repository
    from titans_lsp.paths import cache_root

    run_dir = Path(args.trained) if args.trained else None
    manifest = json.loads((run_dir / "data.json").read_text()) if run_dir and (run_dir / "data.json").exists() else {}
    trainer = json.loads((run_dir / "trainer_state.json").read_text()) if run_dir and (run_dir / "trainer_state.json").exists() else {}
    if args.data or args.pypi:
        repos = load_repositories(args.data, args.pypi, cache_root(args.cache_dir))
    elif manifest:
        repos = load_sources([r["source"] for r in manifest["repositories"]["heldout"]], cache_root(args.cache_dir))
    else:
        parser.error("give --data/--pypi or a --trained run with data.json")
    seq_len = args.seq_len or trainer.get("config", {}).get("seq_len", 256)
    model_spec = args.model or manifest.get("model_spec") or "default"
    lm = load_model(model_spec, device=args.device, dtype="float32", cache_dir=args.cache_dir)
    config = load_memory_config(run_dir) if run_dir else MemoryConfig()
    torch.manual_seed(args.seed)
    patch = install_memory(lm.model, config)
    token_repos = [(r.name, tokenize_repository(r, lm.tokenizer, seq_len, args.max_files)) for r in repos]
    result = run_control(lm.model, patch, lm.tokenizer, token_repos, run_dir, args.prime_fraction, args.bootstrap, args.seed)
    result |= {"model": model_spec, "seq_len": seq_len, "max_files": args.max_files, "trained": str(run_dir) if run_dir else None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "positive_control.json").write_text(json.dumps(result, indent=1))
    (out / "positive_control.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
