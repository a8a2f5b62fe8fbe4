"""Memory training on a toy repository with a tiny random Llama: loss falls, base frozen, resume works."""

from __future__ import annotations

import random

import pytest
import torch

from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import MemoryConfig
from titans_lsp.model.patching import install_memory
from titans_lsp.model.training import (Repository, TrainConfig, Trainer, definitions_first, load_repository,
                                       plot_log, repository_losses, tokenize_repository)


def toy_repository(seed: int, files: int = 3) -> Repository:
    """Later files repeat the identifiers defined in the first, so a memory of earlier files helps."""
    rng = random.Random(seed)
    names = ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(4)]
    defs = "".join(f"def {n}(host, port):\n    return {n}_{rng.randint(0, 99)}\n\n" for n in names)
    uses = ["".join(f"x = {n}(host, port)\n" for n in rng.sample(names, len(names))) for _ in range(files - 1)]
    return Repository(f"toy{seed}", [("pkg/__init__.py", defs)] + [(f"pkg/use{i}.py", u) for i, u in enumerate(uses)])


@pytest.fixture
def patched(tiny_llama_dir):
    lm = load_model(str(tiny_llama_dir), device="cpu")
    patch = install_memory(lm.model, MemoryConfig(memory_dim=32, layers=[1, 3], gate_init=0.0))
    return lm, patch


def test_definitions_first_and_repository_loading(tmp_path):
    assert definitions_first(["a/b/c.py", "a/x.py", "a/__init__.py", "setup.py"]) == \
        ["setup.py", "a/__init__.py", "a/x.py", "a/b/c.py"]
    (tmp_path / "r" / "pkg").mkdir(parents=True)
    (tmp_path / "r" / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / "r" / "top.py").write_text("import pkg\n")
    (tmp_path / "r" / "empty.py").write_text("")
    (tmp_path / "r" / "bad.py").write_bytes(b"\xff\xfe\x00")
    repo = load_repository(tmp_path / "r")
    assert [p for p, _ in repo.files] == ["top.py", "pkg/mod.py"]


def test_few_steps_lower_training_loss_and_leave_base_frozen(patched, tmp_path):
    lm, patch = patched
    base_before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    repo = toy_repository(0)
    files = tokenize_repository(repo, lm.tokenizer, 256)
    before = sum(repository_losses(patch, files)) / (len(files) - 1)
    trainer = Trainer(patch, lm.tokenizer, [repo], [], TrainConfig(lr=3e-2, max_steps=6, eval_every=100), tmp_path / "ckpt")
    trainer.train()
    after = sum(repository_losses(patch, files)) / (len(files) - 1)
    assert after < before - 0.05
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    rows = (tmp_path / "ckpt" / "log.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("step,train_loss")
    plot_log(tmp_path / "ckpt" / "log.csv", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_resume_continues_where_it_stopped(patched, tiny_llama_dir, tmp_path):
    lm, patch = patched
    repos, held = [toy_repository(1), toy_repository(2)], [toy_repository(3)]
    out = tmp_path / "ckpt"
    config = TrainConfig(lr=1e-2, max_steps=2, eval_every=2)
    first = Trainer(patch, lm.tokenizer, repos, held, config, out)
    first.train()
    assert first.state.history[-1]["held_out_loss"] is not None and first.state.best_held_out is not None
    saved = {k: v.clone() for k, v in patch.memory.state_dict().items()}

    lm2 = load_model(str(tiny_llama_dir), device="cpu")
    patch2 = install_memory(lm2.model, checkpoint=out)
    for k, v in patch2.memory.state_dict().items():
        assert torch.equal(v, saved[k]), k
    second = Trainer(patch2, lm2.tokenizer, repos, held, TrainConfig(lr=1e-2, max_steps=4, eval_every=2), out)
    assert second.resume() and second.state.step == 2
    second.train()
    assert second.state.step == 4 and [r["step"] for r in second.state.history] == [1, 2, 3, 4]
    assert len((out / "log.csv").read_text().splitlines()) == 5


def test_empty_data_is_a_clear_error(patched, tmp_path):
    lm, patch = patched
    with pytest.raises(ValueError, match="at least two usable files"):
        Trainer(patch, lm.tokenizer, [Repository("empty", [])], [], TrainConfig(), tmp_path)
    with pytest.raises(NotImplementedError):
        TrainConfig(inner_loop="second_order")


def _write_repo(root, repo: Repository):
    for rel, text in repo.files:
        path = root / repo.name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / repo.name


def test_train_command_end_to_end_and_resume(tiny_llama_dir, tmp_path, capsys):
    from titans_lsp.cli import main

    dirs = [str(_write_repo(tmp_path / "data", toy_repository(s))) for s in range(3)]
    out = tmp_path / "ckpt"
    common = ["train", "--model", str(tiny_llama_dir), "--device", "cpu", "--data", *dirs, "--out", str(out),
              "--held-out", "1", "--memory-dim", "16", "--layers", "1", "3", "--eval-every", "1", "--max-file-tokens", "64"]
    assert main(common + ["--max-steps", "1"]) == 0
    assert main(common + ["--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "step 2" in printed
    for name in ("memory.safetensors", "config.json", "optimizer.pt", "trainer.json", "log.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert len((out / "log.csv").read_text().splitlines()) == 3


def test_train_command_without_usable_data_is_a_user_error(tiny_llama_dir, tmp_path, capsys):
    from titans_lsp.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["train", "--model", str(tiny_llama_dir), "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no repository has at least two" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "o")]) == 1


def test_positive_control_script_runs_untrained_and_trained(patched, tiny_llama_dir, tmp_path, capsys):
    from titans_lsp.evals.memory_positive_control import main

    lm, patch = patched
    patch.save_parameters(tmp_path / "ckpt")
    dirs = [str(_write_repo(tmp_path / "data", toy_repository(s))) for s in range(2)]
    assert main(["--model", str(tiny_llama_dir), "--device", "cpu", "--data", *dirs, "--checkpoint",
                 str(tmp_path / "ckpt"), "--json", str(tmp_path / "pc.json")]) == 0
    import json

    results = json.loads((tmp_path / "pc.json").read_text())
    assert set(results) == {"untrained", "trained"} and results["trained"]["files"] == 4
