#!/bin/sh
# proxy (no generation) on the 60 screening samples, then screening rows (pre-registered: usages, then the
# combination with the highest groundtruth-line-in-block among the others)
cd /work/wt/context
R=/work/scratch-context
REPOS=/root/.cache/titans-lsp/packages/src
date
OMP_NUM_THREADS=1 .venv/bin/python -m titans_lsp.evals.definitions --data evals/datasets/python-dev.jsonl.gz \
  --repos $REPOS --limit 60 --seed 0 \
  --retrieve rg1-bm25 bm25 imports usages usages,bm25 bm25,usages imports,usages usages,imports imports,bm25 bm25,imports \
  --out $R/proxy60.json
date
for C in usages $(.venv/bin/python -c "
import json; r=json.load(open('$R/proxy60.json'))['retrievers']
c=[k for k in r if k not in ('rg1-bm25','bm25','imports','usages')]
print(max(c, key=lambda k: (r[k]['groundtruth_in_block'], -c.index(k))))"); do
  N=$(echo $C | tr , +)
  mkdir -p $R/$N
  .venv/bin/titans-lsp eval --data evals/datasets/python-dev.jsonl.gz --modes concat --threads 1 --no-progress \
    --seed 0 --limit 60 --retrieve $C --repos $REPOS --out $R/$N > $R/$N.log 2>&1
  date
done
