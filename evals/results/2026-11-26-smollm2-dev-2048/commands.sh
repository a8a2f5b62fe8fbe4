#!/bin/sh
# The exact commands behind this directory (2026-11-26, CPU, 2 cores, machine otherwise idle: ~7 s per
# sample per mode). Reference settings: 2048-token window, 512-token cross-file block, 50 new tokens, greedy.
# Dev set: the 166-sample file built for evals/results/2026-11-26-smollm2-dev/ (same command, see there):
titans-lsp eval build --out /tmp/dev.jsonl --pypi mcp==2.3.0 --pypi smolagents==1.26.0 --pypi markitdown==0.1.9 --per-repo 60 --seed 0
# Eval: a seeded 15-sample subset (nested: a larger --limit extends the run), all modes, memory untrained.
titans-lsp eval --data /tmp/dev.jsonl --limit 15 --seed 0 --modes none,concat,memory,ablation --naive none --out evals/results/2026-11-26-smollm2-dev-2048
