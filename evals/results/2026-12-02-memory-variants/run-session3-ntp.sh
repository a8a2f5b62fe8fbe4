#!/bin/sh
# Session 3: the adam ntp optimizer tuned on seed 1, three seed-0 recall configs and their priming cost.
# Run from the worktree root:  /work/bin/cpu-slot sh evals/results/2026-12-02-memory-variants/run-session3-ntp.sh
R=evals/results/2026-12-02-memory-variants
T=$R/tuning-seed1-adam
mkdir -p $T
for lr in 0.003 0.01 0.03; do
  echo "== lr $lr" >> $T/output.txt
  .venv/bin/python -m titans_lsp.evals.memory_recall --model default --threads 1 --variants ntp --workspaces 1 \
    --seed 1 --ntp-config '{"ntp_optimizer": "adam", "ntp_steps": 16, "ntp_lr": '$lr', "max_update_norm": 1e9}' \
    --out $T/lr$lr >> $T/output.txt 2>&1
done
LR=$(.venv/bin/python - <<'PY'
import json
best = min((json.load(open(f"evals/results/2026-12-02-memory-variants/tuning-seed1-adam/lr{lr}/summary.json"))["summary"]["ntp"]["value_nll"], lr)
           for lr in ("0.003", "0.01", "0.03"))
print(best[1])
PY
)
echo "chosen lr $LR (lowest seed-1 value NLL)" >> $T/output.txt
ALL='[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29]'
C1='{"ntp_optimizer": "adam", "ntp_steps": 16, "ntp_lr": '$LR', "max_update_norm": 1e9}'
C2='{"ntp_optimizer": "adam", "ntp_steps": 16, "ntp_lr": '$LR', "max_update_norm": 1e9, "ntp_rank": 32, "layers": '$ALL'}'
.venv/bin/python -m titans_lsp.evals.memory_recall --model default --threads 1 --variants ntp --seed 0 \
  --ntp-config "$C1" --out $R/recall-adam16 > $R/recall-adam16.log 2>&1
.venv/bin/python -m titans_lsp.evals.memory_recall --model default --threads 1 --variants ntp --seed 0 \
  --ntp-config "$C2" --out $R/recall-adam16-all32 > $R/recall-adam16-all32.log 2>&1
.venv/bin/python -m titans_lsp.evals.bench_priming --threads 1 --rules ntp --tokens 512 --repeats 2 --config "$C1" \
  --json $R/bench-priming-adam16.json > $R/bench-priming-adam16.log 2>&1
.venv/bin/python -m titans_lsp.evals.bench_priming --threads 1 --rules ntp --tokens 512 --repeats 2 --config "$C2" \
  --json $R/bench-priming-adam16-all32.json > $R/bench-priming-adam16-all32.log 2>&1
.venv/bin/python -m titans_lsp.evals.memory_recall --model default --threads 1 --variants ntp --seed 0 \
  --ntp-config "$C2" --prime-passes 2 --out $R/recall-adam16-all32-x2 > $R/recall-adam16-all32-x2.log 2>&1
