"""Runs one eval mode over samples through the shared :class:`CompletionEngine`.

Rows go to ``predictions-<label>.jsonl`` as they finish (flushed), so a rerun skips the
task ids already there. Labels: the mode (``none``, ``concat``, ``memory``, ...), with
``vanilla-`` before it for the unpatched model's rows and ``-naive`` after it for the
pipeline without token healing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from titans_lsp.evals.data import crossfile_chunks, task_id
from titans_lsp.evals.metrics import metric_language, score_sample
from titans_lsp.modes import Mode

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 50
CONTEXT_BUDGET = 512
MAX_SEQ = 2048


@dataclass(frozen=True)
class RunSpec:
    label: str  # file/table name
    mode: Mode  # engine mode
    heal: bool = True
    max_seq: int = MAX_SEQ  # the reference window is 2048; smaller only to fit slow CPUs (recorded in results)
    context_budget: int = CONTEXT_BUDGET
    fim: bool = False  # fill-in-the-middle with the sample's right_context (rows <mode>-fim)


def predictions_path(out_dir: Path, label: str) -> Path:
    return out_dir / f"predictions-{label}.jsonl"


def read_predictions(path: Path) -> dict[str, dict]:
    """Rows of a predictions file by task id (a torn last line from a crash is ignored)."""
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():  # a torn UTF-8 tail is not fatal
        try:
            row = json.loads(line)
            rows[str(row["task_id"])] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return rows


REFERENCE_RETRIEVERS = ("rg1-bm25", "rg1-dense")  # CrossCodeEval's rg1 recipe (retrieval/cceval.py), faithfully


def parse_retrieve(value: str) -> str:
    """A ``--retrieve`` value: ``rg1-bm25``/``rg1-dense`` (the reference rows), or a server retriever
    (``bm25``, ``dense``, ``hybrid``, ``imports``, ``usages``) or comma-separated list of them; returned normalized
    (``imports, bm25`` -> ``imports,bm25``). Raises ValueError naming the choices."""
    from titans_lsp.settings import parse_retriever

    value = str(value).strip()
    if value in REFERENCE_RETRIEVERS:
        return value
    try:
        return ",".join(parse_retriever(value))
    except ValueError as exc:
        raise ValueError(f"{exc}; or {' / '.join(REFERENCE_RETRIEVERS)} (CrossCodeEval's rg1 recipe)") from None


def retrieve_label(label: str, retriever: str | None) -> str:
    """A row's label with its retriever: ``concat`` -> ``concat-imports+bm25`` (None: the file's own list)."""
    return label if retriever is None else f"{label}-{retriever.replace(',', '+')}"


class SnippetSource:
    """Where a sample's cross-file context comes from.

    - ``retriever=None``: the sample's own ``crossfile_context`` list, packed by the reference rule.
    - ``rg1-bm25`` / ``rg1-dense``: CrossCodeEval's rg1 retrieval over ``repos/<metadata.repository>/``,
      packed by the reference rule: the faithful reference rows.
    - a server retriever (``bm25``, ``dense``, ``hybrid``, ``imports``, ``usages`` or a list): a
      :class:`~titans_lsp.retrieval.index.WorkspaceIndex` over that repository, exactly as the server
      builds one for a workspace folder; the engine retrieves and packs the block itself
      (:meth:`workspace` gives it the index), as it does for an editor request.
    """

    def __init__(self, retriever: str | None = None, repos: Path | None = None, dense_model: str | None = "default"):
        self.retriever = parse_retrieve(retriever) if retriever is not None else None
        self.repos = repos
        self.dense_model = dense_model
        self._by_repo: dict[str, dict[str, str]] = {}
        self._indexes: dict[str, object] = {}
        if self.retriever is not None and repos is None:
            raise ValueError("a retriever needs repos (one folder per metadata.repository)")

    @property
    def reference(self) -> bool:
        """Whether the block is packed by CrossCodeEval's rule (the file's list, rg1): else the server's."""
        return self.retriever is None or self.retriever in REFERENCE_RETRIEVERS

    def snippets(self, sample: dict):
        """The snippets the engine packs (reference rows), or those a memory mode primes with."""
        from titans_lsp.retrieval.prompt import Snippet

        if self.retriever is None:
            return [Snippet(name, text) for name, text in crossfile_chunks(sample)]
        meta = sample["metadata"]
        if not self.reference:
            from titans_lsp.engine import RETRIEVE_K

            index = self.workspace(sample).index
            return index.retrieve(sample["prompt"], str(meta["file"]), self.retriever.split(","), k=RETRIEVE_K)
        from titans_lsp.retrieval.cceval import rg1_retrieve

        files = self._files(str(meta["repository"]), metric_language(str(meta["file"])))
        items = rg1_retrieve(sample["prompt"], str(meta["file"]), files, ranker=self.retriever.removeprefix("rg1-"))
        return [Snippet(c["filename"], c["retrieved_chunk"], c["score"]) for c in items]

    def workspace(self, sample: dict):
        """A Workspace holding the sample repository's index (built once per repository), as the
        server's folder state holds one."""
        from titans_lsp.engine import Workspace
        from titans_lsp.retrieval.index import WorkspaceIndex

        repository = str(sample["metadata"]["repository"])
        if repository not in self._indexes:
            root = self._root(repository)
            index = WorkspaceIndex(root, state_dir=None, dense_model=self.dense_model)
            index.build()
            self._indexes[repository] = index
        index = self._indexes[repository]
        return Workspace(root=index.root, index=index)

    def _root(self, repository: str) -> Path:
        root = self.repos / repository
        if not root.is_dir():
            from titans_lsp.cli import UserError

            raise UserError(f"--repos: {root} does not exist (metadata.repository {repository!r})")
        return root

    def _files(self, repository: str, language) -> dict[str, str]:
        """The repository's files in the sample's language at ``repos/<metadata.repository>/`` (read once)."""
        key = f"{repository}\0{language.name}"
        if key not in self._by_repo:
            from titans_lsp.evals.build import language_files

            self._by_repo[key] = language_files(self._root(repository), language)
        return self._by_repo[key]


def build_request(engine, sample: dict, spec: RunSpec, source: SnippetSource):
    """(the request, the workspace, priming seconds) one sample runs with in one mode: what
    :func:`run_one` completes, and what ``evals/definitions.py`` reads the block of."""
    from titans_lsp.engine import CompletionRequest, CompletionSettings, Workspace

    server_retrieval = spec.mode.uses_context and not source.reference
    settings = CompletionSettings(mode=spec.mode, max_new_tokens=MAX_NEW_TOKENS, context_budget=spec.context_budget,
                                  max_seq=spec.max_seq, fim="on" if spec.fim else "off",
                                  **({"retriever": source.retriever} if server_retrieval else {}))
    snippets = source.snippets(sample) if spec.mode.uses_memory or (spec.mode.uses_context and not server_retrieval) \
        else None
    # Server retrievers: the engine retrieves from the repository's index and packs the block, as for an editor.
    workspace = source.workspace(sample) if server_retrieval else Workspace()
    prime_s = 0.0
    if spec.mode.uses_memory:
        # The study's protocol: a fresh memory per sample, primed with its cross-file chunks.
        workspace = Workspace(root=workspace.root, index=workspace.index, memory=engine.new_memory_state())
        t = time.perf_counter()
        engine.prime(workspace, [s.text for s in snippets or []])
        prime_s = time.perf_counter() - t
    meta = sample["metadata"]
    language = metric_language(str(meta.get("file") or ""))  # comment syntax of the block, metric rules
    request = CompletionRequest(prefix=sample["prompt"], suffix=str(sample.get("right_context") or "") if spec.fim else "",
                                settings=settings, early_stop=False, heal=spec.heal,
                                path=str(meta.get("file") or "") if server_retrieval else None,
                                snippets=snippets if spec.mode.uses_context and not server_retrieval else None,
                                language_id=language.language_ids[0],
                                packing="reference" if source.reference else "pack")
    return request, workspace, prime_s


def run_one(engine, sample: dict, spec: RunSpec, source: SnippetSource) -> dict:
    """Complete one sample in one mode; the prediction row with its scores."""
    start = time.perf_counter()
    request, workspace, prime_s = build_request(engine, sample, spec, source)
    meta = sample["metadata"]
    language = metric_language(str(meta.get("file") or ""))
    completion = engine.complete(request, workspace)
    score = score_sample(sample["prompt"], completion.raw, sample["groundtruth"], language)
    return {
        "task_id": task_id(sample), "mode": spec.mode.value, "label": spec.label, "heal": spec.heal,
        "healed": completion.healed, "fim": completion.fim, "backend": completion.backend,
        "prediction": score.prediction, "raw": completion.raw, "text": completion.text, "context": completion.context,
        "groundtruth": sample["groundtruth"], "reference": score.reference,
        "em": score.em, "es": score.es, "id_em": score.id_em, "id_f1": score.id_f1,
        "crossfile_symbol": meta.get("crossfile_symbol"), "defined_in": meta.get("defined_in"),
        "repository": meta.get("repository"), "retriever": source.retriever if spec.mode.uses_context else None,
        "prompt_tokens": completion.prompt_tokens, "prime_s": round(prime_s, 4),
        "seconds": round(time.perf_counter() - start, 4),
    }


def run_mode(engine, samples: list[dict], spec: RunSpec, out_dir: Path, source: SnippetSource,
             progress: bool = True, compute: bool = True, concurrency: int = 1) -> dict[str, dict]:
    """Run ``spec`` over ``samples``, skipping task ids already in its predictions file
    (``compute=False``: only read what is there). ``concurrency`` > 1 sends that many samples at
    once to a backend that serves them in parallel (a model server); rows are written as they finish."""
    from tqdm import tqdm

    path = predictions_path(out_dir, spec.label)
    done = read_predictions(path)
    todo = [s for s in samples if task_id(s) not in done] if compute else []
    if done:
        log.info("%s: %d done, %d to go", spec.label, len(samples) - len(todo), len(todo))
    with open(path, "a", encoding="utf-8") as f, tqdm(total=len(samples), initial=len(samples) - len(todo),
                                                      desc=spec.label, disable=not progress, unit="sample") as bar:
        def record(row: dict) -> None:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done[row["task_id"]] = row
            bar.update(1)

        if concurrency > 1 and todo and not engine.backend.backend_for(spec.mode).exclusive:  # auto: per mode
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(concurrency, thread_name_prefix="eval") as pool:
                for row in pool.map(lambda sample: run_one(engine, sample, spec, source), todo):
                    record(row)
        else:
            for sample in todo:
                record(run_one(engine, sample, spec, source))
    wanted = {task_id(s) for s in samples}
    return {k: v for k, v in done.items() if k in wanted}


SHARDS = ".shards"  # under the output directory: one folder per data-parallel rank


def shard_dir(out_dir: Path, rank: int) -> Path:
    return out_dir / SHARDS / f"rank{rank}"


def merge_shards(out_dir: Path, label: str, order: list[str] | None = None) -> int:
    """Fold every rank's shard rows for ``label`` into ``predictions-<label>.jsonl`` (rewritten atomically, rows
    in ``order`` first, then any others), then delete the shard files. Returns the rows merged in."""
    import os

    shards = sorted((out_dir / SHARDS).glob(f"rank*/{predictions_path(Path('.'), label).name}"))
    if not shards:
        return 0
    path = predictions_path(out_dir, label)
    rows = read_predictions(path)
    before = len(rows)
    for shard in shards:
        rows.update(read_predictions(shard))
    rank_of = {key: i for i, key in enumerate(order or [])}
    ordered = sorted(rows.values(), key=lambda row: rank_of.get(str(row["task_id"]), len(rank_of)))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in ordered:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    for shard in shards:  # after the replace: a crash in between leaves duplicates, which merging drops
        shard.unlink()
    return len(rows) - before


def run_mode_sharded(engine, samples: list[dict], spec: RunSpec, out_dir: Path, source: SnippetSource, dist,
                     progress: bool = True, compute: bool = True, concurrency: int = 1) -> dict[str, dict]:
    """:func:`run_mode` data-parallel over ``dist`` (titans_lsp.distributed, from torchrun): rank r completes
    samples r, r + N, ... that no predictions file holds yet, into its own shard folder; rank 0 merges the shards
    into ``predictions-<label>.jsonl``. Resuming works with any number of processes: shards a stopped run left
    are merged first, and done task ids are skipped. One process runs :func:`run_mode` on the merged file."""
    order = [task_id(s) for s in samples]
    if dist.is_main:
        merge_shards(out_dir, spec.label, order)
    dist.barrier()
    if not dist.enabled:
        return run_mode(engine, samples, spec, out_dir, source, progress=progress, compute=compute, concurrency=concurrency)
    done = read_predictions(predictions_path(out_dir, spec.label))
    mine = [s for i, s in enumerate(samples) if i % dist.world == dist.rank and task_id(s) not in done]
    if compute:
        directory = shard_dir(out_dir, dist.rank)
        directory.mkdir(parents=True, exist_ok=True)
        run_mode(engine, mine, spec, directory, source, progress=progress and dist.is_main, compute=True,
                 concurrency=concurrency)
    dist.barrier()
    if dist.is_main:
        merged = merge_shards(out_dir, spec.label, order)
        log.info("%s: merged %d rows from %d processes", spec.label, merged, dist.world)
    dist.barrier()
    wanted = set(order)
    return {k: v for k, v in read_predictions(predictions_path(out_dir, spec.label)).items() if k in wanted}
