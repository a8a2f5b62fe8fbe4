"""`none` and file-list `concat` rows are laid out as before this branch: for the 30 committed rows of
each (../2026-12-02-typescript/python-unchanged/after/, the Python dev set, --limit 30 --seed 0), rebuild
the request through the eval's own path (evals/runner.py build_request -> CompletionEngine) with the
current code and compare the cross-file block and the prompt the model would get (its token ids'
count after healing) - everything that decides a greedy prediction besides the unchanged model.

    .venv/bin/python evals/results/2026-12-02-retrievers/unchanged.py
"""
import json
from pathlib import Path

from titans_lsp.engine import CompletionEngine, Workspace
from titans_lsp.evals.data import read_samples, task_id
from titans_lsp.evals.runner import RunSpec, SnippetSource, build_request
from titans_lsp.modes import Mode

here = Path(__file__).resolve().parent
rows_dir = here.parent / "2026-12-02-typescript" / "python-unchanged" / "after"
samples = {task_id(s): s for s in read_samples(here.parents[1] / "datasets" / "python-dev.jsonl.gz").samples}
engine = CompletionEngine.load("default", device="cpu")
checked = differing = 0
for mode in (Mode.NONE, Mode.CONCAT):
    for line in (rows_dir / f"predictions-{mode.value}.jsonl").open():
        row = json.loads(line)
        request, workspace, _ = build_request(engine, samples[row["task_id"]], RunSpec(mode.value, mode), SnippetSource())
        block = engine.context_for(request, workspace)
        _, prompt_ids, _ = engine._layout(request, workspace or Workspace(), block, None, request.heal)
        checked += 1
        if (block, len(prompt_ids)) != (row["context"], row["prompt_tokens"]):
            differing += 1
            print(mode.value, row["task_id"], "block differs" if block != row["context"] else "prompt length differs")
print(f"rows checked: {checked}, differing: {differing}")
