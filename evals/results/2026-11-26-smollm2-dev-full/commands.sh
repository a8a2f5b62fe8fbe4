#!/bin/sh
# The exact commands behind this directory (2026-11-26/27, CPU, 2 cores, 1 torch thread per process,
# two or three eval processes sharing the cores: the s/sample column is ~2-3x an idle machine's).
# Dev set (166 samples, 3 pinned packages, none used for training):
titans-lsp eval build --out /tmp/dev.jsonl --pypi mcp==2.3.0 --pypi smolagents==1.26.0 --pypi markitdown==0.1.9 --per-repo 60 --seed 0
# The first 15 samples of none/concat/memory/ablation were copied from ../2026-11-26-smollm2-dev-2048/
# (same code, same settings; the run is resumable by task id). The rest, split over processes by mode
# (each writes its own predictions-<mode>.jsonl), e.g.:
OMP_NUM_THREADS=1 titans-lsp eval --data /tmp/dev.jsonl --modes none,ablation --threads 1 --out evals/results/2026-11-26-smollm2-dev-full
OMP_NUM_THREADS=1 titans-lsp eval --data /tmp/dev.jsonl --modes concat,hybrid --threads 1 --out evals/results/2026-11-26-smollm2-dev-full
OMP_NUM_THREADS=1 titans-lsp eval --data /tmp/dev.jsonl --modes memory --threads 1 --out evals/results/2026-11-26-smollm2-dev-full
# Two processes briefly computed the same memory samples; 8 duplicate rows (identical task ids) were dropped.
# Reports over all modes:
titans-lsp eval --data /tmp/dev.jsonl --modes memory,ablation,concat,none,hybrid --report-only --out evals/results/2026-11-26-smollm2-dev-full
