#!/bin/sh
# The exact commands behind this directory, run from the repository root on 2026-11-26 (CPU only:
# 2 cores shared with ~6 other agents, load 14-17, so a small seeded subset, a 512-token window and a
# 256-token block instead of the reference 2048 / 512).
#
# 1. the dev set: 166 samples from 3 pinned packages (deterministic). Built by commit 5a78bb2, whose
#    rg1 was a local copy of the recipe; later commits use retrieval.cceval.rg1_retrieve, which adds the
#    reference's directory-distance order, 1000-chunk cap and tie-breaking, so a rebuild can differ in
#    crossfile_context (prompts and ground truths are the same).
titans-lsp eval build --out /tmp/dev.jsonl --pypi mcp==2.3.0 --pypi smolagents==1.26.0 --pypi markitdown==0.1.9 --per-repo 60 --seed 0

# 2. the eval: the runs were split over parallel processes by groups of modes (prediction files are
#    per mode, so they do not collide) and grown from --limit 6 to 8 to 16 (nested subsets, resumable); the --limit 16 processes were stopped at
#    22:00 and the tables report the 9 samples every mode finished (rows beyond them stay in the files).
#    Equivalent single command:
A="--data /tmp/dev.jsonl --limit 9 --seed 0 --max-seq 512 --context-budget 256 --threads 1 --out evals/results/2026-11-26-smollm2-dev"
titans-lsp eval --modes none,concat $A &
titans-lsp eval --modes memory,ablation $A &
titans-lsp eval --modes "" --naive none $A &
wait

# 3. the combined tables from all prediction files
titans-lsp eval --modes memory,ablation,concat,none --naive none --report-only $A
