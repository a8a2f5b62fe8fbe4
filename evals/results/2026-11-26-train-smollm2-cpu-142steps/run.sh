#!/bin/bash
# The exact commands behind this directory (2026-11-26, CPU, 2 cores shared with an eval; 1 torch thread).
set -x
OMP_NUM_THREADS=1 titans-lsp train --model default --device cpu --pypi-file packages.txt --require-intra-imports \
  --heldout 4 --heldout-max-files 4 --max-files-per-repo 6 --seq-len 128 \
  --max-steps 142 --warmup-steps 5 --lr 1e-3 --gate-lr-scale 10 --time-limit 55 \
  --eval-every 47 --checkpoint-every 20 --seed 0 --out /work/runs-train/smollm2-cpu-full --no-progress
# Positive control on 12 held-out repositories: the run's 4 plus 8 more pinned packages (none in training or the dev set).
OMP_NUM_THREADS=1 python -m titans_lsp.evals.positive_control --trained /work/runs-train/smollm2-cpu-full --max-files 6 \
  --prime-fraction 0.5 --bootstrap 2000 --pypi rich==15.0.0 pluggy==1.7.0 pathspec==1.1.1 requests==2.34.2 \
  flask==3.1.1 werkzeug==3.1.3 itsdangerous==2.2.0 marshmallow==3.26.1 tomlkit==0.13.3 platformdirs==4.3.8 \
  more-itertools==10.7.0 PyYAML==6.0.2 --out positive_control
