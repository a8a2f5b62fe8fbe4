"""Positive control for the memory on held-out repositories (the check the study did not run).

For each repository: prime the memory on its earlier files (definitions first) and measure the
next-token loss of each later file with memory on vs ablation (gates shut), for an untrained memory
and, with ``--checkpoint``, a trained one. Reports mean loss differences with 95% confidence intervals.

    python -m titans_lsp.evals.memory_positive_control --model default --data-root DIR [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def per_file_deltas(patch, files: list[list[int]]) -> list[float]:
    """loss(memory) - loss(ablation) for files 1.. of one repository (negative: memory helps)."""
    from titans_lsp.model.training import repository_losses

    on = repository_losses(patch, files, gates="open")
    off = repository_losses(patch, files, gates="shut")
    return [a - b for a, b in zip(on, off)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", nargs="*", default=[], help="repository directories")
    parser.add_argument("--data-root", nargs="*", default=[], help="folders whose subfolders are repositories")
    parser.add_argument("--checkpoint", default=None, help="trained memory checkpoint (titans-lsp train --out)")
    parser.add_argument("--max-files", type=int, default=20)
    parser.add_argument("--max-file-tokens", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory, load_memory_config
    from titans_lsp.model.training import load_repository, mean_ci, tokenize_repository

    dirs = [Path(d) for d in args.data]
    for root in args.data_root:
        dirs += sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    lm = load_model(args.model, device=args.device)
    repos = [tokenize_repository(load_repository(d, max_files=args.max_files), lm.tokenizer, args.max_file_tokens) for d in dirs]
    repos = [r for r in repos if len(r) >= 2]
    if not repos:
        raise SystemExit("no repository with at least two usable files")
    variants = {"untrained": None}
    if args.checkpoint:
        variants["trained"] = args.checkpoint
    results = {}
    for name, ckpt in variants.items():
        config = load_memory_config(ckpt) if ckpt else MemoryConfig()
        patch = install_memory(lm.model, config)
        if ckpt:
            patch.load_parameters(ckpt)
        deltas = [d for files in repos for d in per_file_deltas(patch, files)]
        mean, half = mean_ci(deltas)
        results[name] = {"files": len(deltas), "repositories": len(repos), "mean_delta": mean, "ci95": half}
        print(f"{name:9s} loss(memory) - loss(ablation) = {mean:+.4f} +/- {half:.4f} (95% CI, {len(deltas)} files, "
              f"{len(repos)} repositories)")
        patch.uninstall()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
