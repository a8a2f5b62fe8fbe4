"""How often each retriever's context contains the cross-file symbol a completion needs.

Builds CrossCodeEval-style samples from real packages (the prompt is cut right before an identifier
that is defined in another file of the same package, found through import resolution), then for each
retriever checks whether the cross-file block (CrossCodeEval format, 512 tokens of the default
model's tokenizer) mentions that identifier. This is a retrieval-only proxy: no model runs.

    .venv/bin/python evals/retrieval_recall.py --packages pygls watchdog cattrs --dense-packages pygls watchdog cattrs \
        --per-package 60 --out evals/results/<date>-retrieval-bench
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

def find_package(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name} is not importable here")
    return Path(list(spec.submodule_search_locations)[0])


def build_samples(root: Path, files: dict[str, str], per_package: int, seed: int, language=None,
                  read_config=None) -> list[dict]:
    """Cut points right before a use of a name imported from another file of the package (Python, or
    TypeScript/JavaScript with ``language``; ``read_config`` reads its tsconfig/package.json files)."""
    from titans_lsp.retrieval.imports import STAR, DefinitionLookup, ModuleMap, parse_ecma_module, parse_imports
    from titans_lsp.retrieval.languages import PYTHON

    language = language or PYTHON
    python = language is PYTHON
    modules = ModuleMap(files, root.name, read_config) if python else ModuleMap(files, "", read_config)
    lookup = DefinitionLookup(modules, files.get)
    word = language.word_chars
    candidates = []
    for rel, text in sorted(files.items()):
        lines = text.split("\n")
        if python:
            last_import = max((i for i, line in enumerate(lines) if re.match(r"(from\s+\S+\s+import|import)\s", line)), default=-1)
            bindings = parse_imports(text)
        else:
            bindings, _, spans = parse_ecma_module(text, language)
            last_import = max((text.count("\n", 0, end) for _, end in spans), default=-1)
            bindings = [b for b in bindings if b.alias != STAR]
        for binding in bindings:
            module_rel = modules.resolve_binding_module(binding, rel)
            if module_rel is None:
                continue
            if binding.symbol is not None:
                found = lookup.find(module_rel, binding.symbol)
                if found is None or found[1] is None or found[0] == rel:
                    continue
                pattern = re.compile(rf"(?<![{word}.])" + re.escape(binding.alias) + rf"(?![{word}])")
                symbol = binding.alias
            else:
                pattern = re.compile(rf"(?<![{word}.])" + re.escape(binding.alias) + rf"\.([{word}]+)")
                symbol = None
            for number in range(last_import + 1, len(lines)):
                line = lines[number]
                if line.lstrip().startswith(language.comment):
                    continue
                for match in pattern.finditer(line):
                    if symbol is None:  # module.attr: the attribute must be defined in the package
                        attr = match.group(1)
                        found = lookup.find(module_rel, attr)
                        if found is None or found[1] is None or found[0] == rel:
                            continue
                        col, name = match.start(1), attr
                    else:
                        col, name = match.start(), symbol
                    candidates.append((rel, number, col, name))
    rng = random.Random(seed)
    picked = rng.sample(candidates, min(per_package, len(candidates)))
    samples = []
    for rel, number, col, name in picked:
        lines = files[rel].split("\n")
        samples.append({"prompt": "\n".join(lines[:number] + [lines[number][:col]]), "groundtruth": lines[number][col:],
                        "symbol": name, "metadata": {"repository": root.name, "file": rel, "groundtruth_start_lineno": number}})
    return samples


class CachedEncoder:
    """The default dense encoder with a per-text cache (rg1 re-encodes the same chunks per sample)."""

    def __init__(self, store):
        self.store, self.cache = store, {}

    def encode(self, texts):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for text, vector in zip(todo, self.store.encode(todo)):
                self.cache[text] = vector
        return np.stack([self.cache[t] for t in texts])


def load_tokenizer():
    from transformers import AutoTokenizer

    from titans_lsp.model.loading import converted_gguf_dir, default_model_path

    directory = converted_gguf_dir(default_model_path())
    if (directory / "config.json").is_file():
        return AutoTokenizer.from_pretrained(directory)
    from titans_lsp.model.loading import load_model

    return load_model("default").tokenizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", nargs="*", default=["pygls", "watchdog", "cattrs", "anyio", "typer", "click"],
                        help="installed Python packages")
    parser.add_argument("--dense-packages", nargs="*", default=["pygls", "watchdog", "cattrs"])
    parser.add_argument("--npm", nargs="*", default=[], help="pinned npm packages NAME==VERSION (TypeScript sources)")
    parser.add_argument("--dense-npm", action="store_true", help="also the dense rg1 row for the --npm packages")
    parser.add_argument("--per-package", type=int, default=60)
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import shutil
    import tempfile

    from titans_lsp.retrieval.cceval import repo_python_files, rg1_retrieve
    from titans_lsp.retrieval.dense import DenseStore
    from titans_lsp.retrieval.index import WorkspaceIndex
    from titans_lsp.retrieval.prompt import crossfile_block

    tokenizer = load_tokenizer()
    encoder = CachedEncoder(DenseStore("default")) if args.dense_packages else None
    hits: dict[str, list[int]] = {}
    per_package: dict[str, dict] = {}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="recall-"))
    try:
        from titans_lsp.evals.build import language_files, main_language
        from titans_lsp.paths import cache_root
        from titans_lsp.retrieval.languages import PYTHON
        from titans_lsp.retrieval.packages import fetch_npm
        from titans_lsp.retrieval.workspace import WorkspaceFilter

        sources = [(package, find_package(package), PYTHON) for package in args.packages]
        for spec in args.npm:
            npm_root = fetch_npm(spec, cache_root())
            sources.append((npm_root.name, npm_root, main_language(npm_root)))
        for package, source, language in sources:
            files = repo_python_files(source) if language is PYTHON else language_files(source, language)
            root = work / source.name
            for rel, text in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text)
            configs = WorkspaceFilter(source)  # package.json, tsconfig*.json: what import resolution reads
            for path in sorted(source.rglob("*.json")) if language is not PYTHON else []:
                rel = path.relative_to(source).as_posix()
                text = configs.load_config(rel)
                if text is not None:
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / rel).write_text(text)
            index = WorkspaceIndex(root, None, dense_model=None)
            index.build()
            samples = build_samples(root, files, args.per_package, args.seed, language,
                                    WorkspaceFilter(root).load_config)
            dense = package in (args.dense_packages or []) or (language is not PYTHON and args.dense_npm)
            package_hits: dict[str, list[int]] = {}
            for sample in samples:
                prompt, current, symbol = sample["prompt"], sample["metadata"]["file"], sample["symbol"]
                contexts = {
                    "none": [],
                    "rg1_bm25 (rank-bm25, faithful)": rg1_retrieve(prompt, current, files, "bm25"),
                    "index bm25": index.retrieve(prompt, current, "bm25", k=5),
                    "index imports": index.retrieve(prompt, current, "imports", k=5),
                    "index bm25+imports (RRF)": index.retrieve(prompt, current, ["bm25", "imports"], k=5),
                    "imports then bm25": (index.retrieve(prompt, current, "imports", k=2)
                                          + index.retrieve(prompt, current, "bm25", k=5))[:5],
                }
                if dense:
                    contexts["rg1_dense (MiniLM cosine)"] = rg1_retrieve(prompt, current, files, "dense", encoder=encoder)
                for name, snippets in contexts.items():
                    block = crossfile_block(snippets, tokenizer, args.budget, comment=language.comment)
                    hit = int(re.search(r"(?<!\w)" + re.escape(symbol) + r"(?!\w)", block) is not None)
                    package_hits.setdefault(name, []).append(hit)
                    hits.setdefault(name, []).append(hit)
            per_package[package] = {"language": language.name, "files": len(files), "chunks": index.num_chunks(),
                                     "samples": len(samples),
                                    **{k: round(100 * sum(v) / max(1, len(v)), 1) for k, v in package_hits.items()}}
            print(package, per_package[package], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "metric": f"% of samples whose cross-file block ({args.budget} tokens, default tokenizer) contains the target identifier",
        "overall": {k: {"samples": len(v), "percent": round(100 * sum(v) / max(1, len(v)), 1)} for k, v in hits.items()},
        "per_package": per_package, "seconds": round(time.perf_counter() - started, 1),
        "note": "rg1_dense rows cover only --dense-packages; every other row covers all packages",
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recall.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
