"""Data parallelism under torchrun on CPU (gloo): `titans-lsp train` and `titans-lsp eval` with 2 processes
give what one process gives (train: one process stepping the doubled batch)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from titans_lsp.cli import main

MEMORY = json.dumps({"memory_dim": 32, "layers": [1, 3]})


def torchrun(args: list[str], cwd: Path, processes: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m titans_lsp ARGS`` on the CPU (gloo), one thread each."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "titans_lsp", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def write_repositories(root: Path, count: int = 4) -> list[str]:
    """Toy repositories as directories (--data): later files call what the first defines."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_training import toy_repository

    dirs = []
    for seed in range(count):
        repo = toy_repository(seed)
        for f in repo.files:
            path = root / repo.name / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f.text)
        dirs.append(str(root / repo.name))
    return dirs


def read_parameters(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "memory.safetensors"))


def test_two_processes_train_the_parameters_of_one_process_with_the_doubled_batch(tiny_llama_dir, tmp_path):
    data = write_repositories(tmp_path / "data")
    common = ["train", "--model", str(tiny_llama_dir), "--device", "cpu", "--data", *data, "--heldout", "0",
              "--seq-len", "64", "--max-steps", "3", "--lr", "3e-2", "--warmup-steps", "1", "--eval-every", "100",
              "--checkpoint-every", "100", "--memory-config", MEMORY, "--no-progress", "--batch-size", "2"]
    done = torchrun(common + ["--out", str(tmp_path / "ddp")], cwd=tmp_path)
    assert "2 processes" in done.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process
    try:
        assert main(common + ["--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    ddp, one = read_parameters(tmp_path / "ddp"), read_parameters(tmp_path / "one")
    assert ddp.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=0, atol=1e-6, msg=name)
    initial = read_parameters_after_zero_steps(tiny_llama_dir, tmp_path)
    moved = sum(not torch.equal(one[name], initial[name]) for name in one)
    assert moved > 0  # the steps changed the parameters, so agreeing is not trivial
    rows = {name: list(csv.DictReader((tmp_path / name / "train_log.csv").open())) for name in ("ddp", "one")}
    assert [(r["repo"], r["file"], r["tokens"]) for r in rows["ddp"]] == [(r["repo"], r["file"], r["tokens"]) for r in rows["one"]]
    for a, b in zip(rows["ddp"], rows["one"]):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-5)
    assert not (tmp_path / "ddp" / ".checkpoint-tmp").exists()


def read_parameters_after_zero_steps(tiny_llama_dir, tmp_path) -> dict[str, torch.Tensor]:
    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory

    lm = load_model(str(tiny_llama_dir), device="cpu")
    patch = install_memory(lm.model, MemoryConfig.from_dict(json.loads(MEMORY)))
    patch.save_parameters(tmp_path / "initial")
    return read_parameters(tmp_path / "initial")


def test_batch_size_must_split_over_the_processes(tiny_llama_dir, tmp_path):
    data = write_repositories(tmp_path / "data", count=3)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "titans_lsp",
           "train", "--model", str(tiny_llama_dir), "--device", "cpu", "--data", *data, "--heldout", "0",
           "--seq-len", "32", "--max-steps", "1", "--memory-config", MEMORY, "--no-progress", "--batch-size", "1",
           "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "must be a multiple of the 2 processes" in done.stderr + done.stdout


TIMING = ("seconds", "prime_s")  # wall-clock fields: differ between any two runs


def predictions(directory: Path, label: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in (directory / f"predictions-{label}.jsonl").read_text().splitlines()]
    return {r["task_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def test_two_processes_evaluate_like_one_and_resume(tiny_llama_dir, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_eval_e2e import write_repo

    repo = write_repo(tmp_path / "src")
    data = tmp_path / "dev.jsonl"
    assert main(["eval", "build", "--out", str(data), "--dir", str(repo), "--per-repo", "5"]) == 0
    from titans_lsp.evals.data import read_samples

    n = len(read_samples(data).samples)
    assert n >= 3
    common = ["eval", "--data", str(data), "--modes", "memory,none", "--model", str(tiny_llama_dir), "--device", "cpu",
              "--no-progress", "--max-seq", "256", "--context-budget", "96", "--threads", "1"]
    done = torchrun(common + ["--out", str(tmp_path / "ddp")], cwd=tmp_path)
    assert done.stdout.count("| none") >= 1  # rank 0 alone prints the tables
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    for label in ("memory", "none"):
        assert predictions(tmp_path / "ddp", label) == predictions(tmp_path / "one", label)
        assert len(predictions(tmp_path / "one", label)) == n
    ddp, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("ddp", "one"))
    for label in ("memory", "none"):
        assert {k: ddp[label][k] for k in ("n", "em", "es")} == {k: one[label][k] for k in ("n", "em", "es")}
    assert ddp["info"]["processes"] == 2 and one["info"]["processes"] == 1
    assert not list((tmp_path / "ddp" / ".shards").glob("rank*/*.jsonl"))  # merged and removed

    # A stopped data-parallel run: two rows lost from the merged file, one of them left in a rank's shard.
    path = tmp_path / "ddp" / "predictions-none.jsonl"
    lines = path.read_text().splitlines()
    kept, lost = lines[:-2], lines[-2:]
    path.write_text("\n".join(kept) + "\n")
    marked = json.loads(lost[0]) | {"raw": "FROM-THE-SHARD"}
    shard = tmp_path / "ddp" / ".shards" / "rank1" / "predictions-none.jsonl"
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_text(json.dumps(marked) + "\n")
    torchrun(common + ["--out", str(tmp_path / "ddp")], cwd=tmp_path)
    resumed = predictions(tmp_path / "ddp", "none")
    assert len(resumed) == n
    assert resumed[marked["task_id"]]["raw"] == "FROM-THE-SHARD"  # merged, not recomputed
    recomputed = json.loads(lost[1])["task_id"]
    assert resumed[recomputed] == predictions(tmp_path / "one", "none")[recomputed]
    assert not shard.exists()
