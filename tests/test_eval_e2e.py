"""`titans-lsp eval build` and `titans-lsp eval` end to end on a tiny repository and a tiny random model."""

import json
from pathlib import Path

import pytest

from toy_repos import write_toy_package
from titans_lsp.cli import main
from titans_lsp.evals.data import read_samples


def write_repo(root: Path) -> Path:
    """Three modules that use each other's top-level names, with enough lines before each use."""
    return write_toy_package(root)


def test_build_is_deterministic_and_well_formed(tmp_path):
    repo = write_repo(tmp_path / "src")
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["eval", "build", "--out", str(out1), "--dir", str(repo), "--per-repo", "10", "--seed", "3"]) == 0
    assert main(["eval", "build", "--out", str(out2), "--dir", str(repo), "--per-repo", "10", "--seed", "3"]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    samples = read_samples(out1).samples
    assert len(samples) >= 4
    for s in samples:
        meta = s["metadata"]
        line = (repo / meta["file"]).read_text().split("\n")[meta["groundtruth_start_lineno"]]
        assert line.endswith(s["groundtruth"]) and s["groundtruth"].startswith(meta["crossfile_symbol"])
        assert s["prompt"].endswith(line[: len(line) - len(s["groundtruth"])])
        assert meta["file"] not in meta["defined_in"]
        names = [c["filename"] for c in s["crossfile_context"]["list"]]
        assert names and meta["file"] not in names and len(names) <= 5


def test_malformed_lines_are_reported_and_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    good = {"prompt": "x = ", "groundtruth": "1", "metadata": {"task_id": "t/0"}}
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"prompt": "x"}) + "\n" + json.dumps(good) + "\n")
    data = read_samples(path)
    assert [s["metadata"]["task_id"] for s in data.samples] == ["t/0"]
    assert [p.split(":")[0] for p in data.problems] == ["line 2", "line 3", "line 4"]
    assert "duplicate" in data.problems[2]


@pytest.mark.timeout(240)
def test_tiny_end_to_end_eval_is_resumable(tmp_path, tiny_llama_dir, capsys):
    repo = write_repo(tmp_path / "src")
    data = tmp_path / "dev.jsonl"
    assert main(["eval", "build", "--out", str(data), "--dir", str(repo), "--per-repo", "3"]) == 0
    with open(data, "a") as f:
        f.write("garbage\n")
    out = tmp_path / "out"
    argv = ["eval", "--data", str(data), "--modes", "memory,ablation,concat,none", "--naive", "none", "--model", str(tiny_llama_dir),
            "--device", "cpu", "--out", str(out), "--no-progress", "--max-seq", "512", "--context-budget", "256",
            "--threads", "1"]  # one thread: tiny ops on a busy machine are otherwise dominated by thread syncs
    assert main(argv) == 0
    assert "line 4" in capsys.readouterr().err  # the garbage line, reported by number
    for name in ("predictions-memory.jsonl", "predictions-ablation.jsonl", "predictions-concat.jsonl", "predictions-none.jsonl", "predictions-none-naive.jsonl", "results.json",
                 "tables.md", "analysis.md", "em.png", "es.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "predictions-concat.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and any(r["context"].startswith("# Here are some relevant") for r in rows)
    assert {"task_id", "prediction", "raw", "text", "em", "es"} <= set(rows[0])
    results = json.loads((out / "results.json").read_text())
    assert results["none"]["n"] == 3 and "em_ci95" in results["concat"]
    assert "fuzzywuzzy" in results["info"]["es_implementation"]
    assert "concat vs none" in results["paired_tests"] and "memory vs ablation" in results["paired_tests"]
    assert "UNTRAINED" in (out / "tables.md").read_text()
    assert "| Mode | EM (%) | Edit Sim (%) | ID-EM | ID-F1 |" in (out / "tables.md").read_text()
    # resumable: a rerun computes nothing new and appends nothing
    before = (out / "predictions-none.jsonl").read_text()
    assert main(argv) == 0
    assert (out / "predictions-none.jsonl").read_text() == before
    # retrieval over the repositories instead of the file's list: the rg1 reference rows and a server
    # retriever, one set of rows each, labelled by retriever, the latter tested against the former
    retrieved = tmp_path / "retrieved"
    argv_r = argv[:argv.index("--out")] + ["--out", str(retrieved), "--no-progress", "--modes", "concat", "--naive", "",
                                           "--threads", "1", "--retrieve", "rg1-bm25", "imports,bm25",
                                           "--repos", str(repo.parent)]
    assert main(argv_r) == 0
    for label, retriever in (("concat-rg1-bm25", "rg1-bm25"), ("concat-imports+bm25", "imports,bm25")):
        rows = [json.loads(line) for line in (retrieved / f"predictions-{label}.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and {r["retriever"] for r in rows} == {retriever}
        assert any("# the below code fragment is found in server.py" in r["context"] or
                   "# the below code fragment is found in config.py" in r["context"] for r in rows)
    assert not (retrieved / "predictions-concat.jsonl").exists()
    results = json.loads((retrieved / "results.json").read_text())
    assert "concat-imports+bm25 vs concat-rg1-bm25" in results["paired_tests"]
    assert 0.0 <= results["concat-imports+bm25"]["definition_in_block"] <= 1.0
    assert "## By retriever" in (retrieved / "tables.md").read_text()
    assert main(argv_r[:-3] + ["--retrieve", "tfidf", "--repos", str(repo.parent)]) != 0
    assert "--retrieve: ['tfidf'] is not one of" in capsys.readouterr().err


def write_ts_repo(root: Path) -> Path:
    """A tiny TypeScript package: modules that import each other's exported names."""
    root.mkdir(parents=True)
    filler = "".join(f"// filler line {i}\n" for i in range(12))
    (root / "money.ts").write_text("export type Currency = 'EUR' | 'USD';\n\nexport function formatPrice(cents: number): string {\n"
                                   "  return `${cents / 100}`;\n}\n\nconst local = 1;\n")
    (root / "cart.ts").write_text('import { Currency, formatPrice } from "./money.js";\n' + filler +
                                  "export class Cart {\n  currency: Currency = 'EUR';\n  total(): string {\n"
                                  "    return formatPrice(100);\n  }\n}\n")
    (root / "main.ts").write_text('import { Cart } from "./cart";\nimport { formatPrice } from "./money";\n' + filler +
                                  "const local = 2;\nexport function main(): string {\n  const cart = new Cart();\n"
                                  "  return formatPrice(1) + cart.total() + local;\n}\n")
    (root / "types.d.ts").write_text("export declare function formatPrice(cents: number): string;\n")
    return root


def test_build_reads_typescript_with_its_grammar(tmp_path):
    repo = write_ts_repo(tmp_path / "shop")
    out = tmp_path / "ts.jsonl"
    assert main(["eval", "build", "--out", str(out), "--dir", str(repo), "--per-repo", "20"]) == 0
    samples = read_samples(out).samples
    got = sorted((s["metadata"]["file"], s["groundtruth"]) for s in samples)
    # imported names defined in another file; never `local` (each file's own), never from a .d.ts
    assert got == [("cart.ts", "Currency = 'EUR';"), ("cart.ts", "formatPrice(100);"), ("main.ts", "Cart();"),
                   ("main.ts", "formatPrice(1) + cart.total() + local;")]
    for s in samples:
        assert s["metadata"]["language"] == "typescript"
        assert s["crossfile_context"]["text"].startswith("// Here are some relevant code fragments")
        assert all(c["filename"].endswith(".ts") and not c["filename"].endswith(".d.ts")
                   for c in s["crossfile_context"]["list"])


def test_build_language_flag_is_validated(tmp_path, capsys):
    repo = write_ts_repo(tmp_path / "shop")
    assert main(["eval", "build", "--out", str(tmp_path / "x.jsonl"), "--dir", str(repo), "--language", "klingon"]) != 0
    assert "unknown language 'klingon'" in capsys.readouterr().err
    assert main(["eval", "build", "--out", str(tmp_path / "y.jsonl"), "--dir", str(repo), "--language", "lua"]) != 0
    assert "no definition rules" in capsys.readouterr().err
