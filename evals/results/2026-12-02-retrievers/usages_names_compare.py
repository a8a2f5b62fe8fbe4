"""usages on the 166 dev samples: names and snippets from import_context (before) vs workspace_names (now).

    .venv/bin/python evals/results/2026-12-02-retrievers/usages_names_compare.py
"""
import sys
from pathlib import Path
import titans_lsp.retrieval.index as ix
from titans_lsp.evals.data import read_samples
from titans_lsp.evals.runner import SnippetSource
from titans_lsp.evals.definitions import groundtruth_in_block
from titans_lsp.retrieval.imports import import_context, workspace_names
from titans_lsp.paths import cache_root
from titans_lsp.retrieval.packages import repos_dir

repos = repos_dir(cache_root(None))  # the dev set's packages (run.sh says how they were fetched)
samples = read_samples("evals/datasets/python-dev.jsonl.gz").samples
source = SnippetSource("usages", repos)
real = ix.workspace_names
def old_names(prefix, current, modules, limit, mentions=None):
    idx = current_index[0]
    return list(dict.fromkeys(s.name.rsplit(".", 1)[-1] for s in import_context(prefix, current, modules, idx._read_rel, limit=limit, lookup=idx._lookup)))
current_index = [None]
same_words = same_snips = 0; gt_old = gt_new = 0; diffs = []
for sample in samples:
    index = source.workspace(sample).index; current_index[0] = index
    prefix, rel = sample["prompt"], str(sample["metadata"]["file"])
    ix.workspace_names = old_names; old = index.usage_snippets(prefix, rel, 5); ow = old_names(prefix, rel, index.module_map(), 20)
    ix.workspace_names = real; new = index.usage_snippets(prefix, rel, 5); nw = real(prefix, rel, index.module_map(), 20, index._mentions)
    same_words += set(ow) == set(nw); same_snips += old == new
    if set(ow) != set(nw): diffs.append((rel, sorted(set(nw) - set(ow)), sorted(set(ow) - set(nw))))
    g = sample.get("groundtruth", "").split("\n")[0].strip()
    gt_old += any(g and g in s.text for s in old); gt_new += any(g and g in s.text for s in new)
print(f"{len(samples)} samples: same words {same_words}, same snippets {same_snips}; groundtruth line in the usages snippets before {gt_old}, now {gt_new}")
for d in diffs[:15]: print(d)
