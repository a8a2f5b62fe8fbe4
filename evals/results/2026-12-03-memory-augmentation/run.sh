# run.sh LOG SEED WS CFG FORMS VARIANTS [REPS]: one row, from this directory, in the background-friendly form used for every row
LOG=$1; shift
PYTHONPATH=/work/bin/wt-shim TITANS_WT=/work/wt-kaug /work/bin/cpu-slot /work/main/.venv/bin/python aug.py "$@" > "$LOG" 2>&1
