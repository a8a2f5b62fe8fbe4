"""Frozen-base training of the memory's parameters on repository-grouped code (first-order inner loop).

One step = one repository: a fresh memory state, then for each file in definitions-first order,
the next-token loss of the file read through the memory primed by the files before it (gradients
reach the retrieve projections, gates and output projections), then the file is written into the
memory (a detached, first-order update, exactly what the server's priming does). The memory
persists across a repository's files and resets between repositories; the base model never
changes. Checkpoints hold the memory parameters alone (``TitansPatch.save_parameters``) plus the
optimizer state and step, so a run resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from titans_lsp.model.patching import TitansPatch

TRAINER_FILE = "trainer.json"
OPTIMIZER_FILE = "optimizer.pt"
LOG_FILE = "log.csv"


@dataclass
class Repository:
    """One repository's files, in the order they are written into memory."""

    name: str
    files: list[tuple[str, str]]  # (relative path, text)


def definitions_first(paths: Iterable[str]) -> list[str]:
    """Shallower paths first (package roots and ``__init__`` modules define what deeper files use), then by name."""
    return sorted(paths, key=lambda p: (p.count("/"), not p.endswith("__init__.py"), p))


def load_repository(directory: str | os.PathLike, extensions: tuple[str, ...] = (".py",), max_files: int = 200,
                    max_bytes: int = 200_000) -> Repository:
    """Read a directory tree as one repository; unreadable, empty or huge files are skipped."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    found = []
    for path in root.rglob("*"):
        if path.suffix in extensions and path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            found.append(path.relative_to(root).as_posix())
    files = []
    for rel in definitions_first(found)[:max_files]:
        try:
            data = (root / rel).read_bytes()
            if not data.strip() or len(data) > max_bytes:
                continue
            files.append((rel, data.decode("utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    return Repository(root.name, files)


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 100
    max_file_tokens: int = 1024  # each file is truncated to this many tokens for the loss
    chunk_tokens: int = 512  # priming chunk size
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 25
    inner_loop: str = "first_order"  # only first order is implemented

    def __post_init__(self) -> None:
        if self.inner_loop != "first_order":
            raise NotImplementedError("inner_loop='second_order' (differentiating through memory updates) is not implemented yet")


def tokenize_repository(repo: Repository, tokenizer, max_file_tokens: int) -> list[list[int]]:
    out = []
    for _, text in repo.files:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_file_tokens]
        if len(ids) >= 2:
            out.append(ids)
    return out


def repository_losses(patch: TitansPatch, files: list[list[int]], chunk_tokens: int = 512, gates: str = "open",
                      backward: bool = False, state=None) -> list[float]:
    """Loss of each file after the first, read through the memory primed by the files before it.
    With ``backward`` each file's loss is back-propagated at once (mean over files), freeing its graph."""
    model = patch.model
    device = next(model.parameters()).device
    state = state if state is not None else patch.new_state()
    losses = []
    count = max(len(files) - 1, 1)
    for i, ids in enumerate(files):
        if i > 0:
            x = torch.tensor([ids], device=device)
            # backward inside activate(): gradient checkpointing recomputes layers during backward,
            # and the recomputation must read the same memory
            with torch.set_grad_enabled(backward), patch.activate(state, gates=gates):
                loss = model(x, labels=x, use_cache=False).loss
                if backward:
                    (loss / count).backward()
            losses.append(float(loss.detach()))
        if i < len(files) - 1:
            patch.prime(state, [ids], chunk_tokens=chunk_tokens)
    return losses


@dataclass
class TrainerState:
    step: int = 0
    best_held_out: float | None = None
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Trains ``patch.trainable_parameters()`` over repositories; logs CSV; checkpoints to ``out``."""

    def __init__(self, patch: TitansPatch, tokenizer, train: list[Repository], held_out: list[Repository],
                 config: TrainConfig, out: str | os.PathLike):
        self.patch, self.tokenizer, self.config, self.out = patch, tokenizer, config, Path(out)
        self.train_files = [f for f in (tokenize_repository(r, tokenizer, config.max_file_tokens) for r in train) if len(f) >= 2]
        self.held_out_files = [f for f in (tokenize_repository(r, tokenizer, config.max_file_tokens) for r in held_out) if len(f) >= 2]
        if not self.train_files:
            raise ValueError("no training repository has at least two usable files")
        self.params = patch.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.state = TrainerState()
        self.rng = random.Random(config.seed)

    # -- checkpoints --------------------------------------------------------------------------
    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        extra = {"trainer": {"step": self.state.step, "best_held_out": self.state.best_held_out,
                             "train_config": asdict(self.config)}}
        self.patch.save_parameters(self.out, extra=extra)
        tmp = self.out / (OPTIMIZER_FILE + ".tmp")
        torch.save({"optimizer": self.optimizer.state_dict(), "rng": self.rng.getstate()}, tmp)
        os.replace(tmp, self.out / OPTIMIZER_FILE)
        tmp = self.out / (TRAINER_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        os.replace(tmp, self.out / TRAINER_FILE)

    def resume(self) -> bool:
        """Continue from ``out`` if it holds a checkpoint; returns whether it did."""
        if not (self.out / TRAINER_FILE).is_file():
            return False
        self.patch.load_parameters(self.out)
        saved = torch.load(self.out / OPTIMIZER_FILE, weights_only=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.rng.setstate(saved["rng"])
        self.state = TrainerState(**json.loads((self.out / TRAINER_FILE).read_text()))
        return True

    # -- loop ---------------------------------------------------------------------------------
    def held_out_loss(self) -> float | None:
        if not self.held_out_files:
            return None
        losses = [l for files in self.held_out_files for l in repository_losses(self.patch, files, self.config.chunk_tokens)]
        return sum(losses) / len(losses)

    def step(self) -> dict:
        files = self.train_files[self.rng.randrange(len(self.train_files))]
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        state = self.patch.new_state()
        losses = repository_losses(self.patch, files, self.config.chunk_tokens, backward=True, state=state)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip))
        self.optimizer.step()
        self.state.step += 1
        row = {"step": self.state.step, "train_loss": sum(losses) / len(losses), "grad_norm": grad_norm,
               "update_norm": max(state.last_update_norm.values(), default=0.0), "seconds": time.perf_counter() - start}
        row.update({f"gate_{i}": g for i, g in self.patch.gate_values().items()})
        return row

    def train(self, progress: bool = False) -> TrainerState:
        from tqdm import tqdm

        bar = tqdm(total=self.config.max_steps, initial=self.state.step, disable=not progress, desc="train")
        while self.state.step < self.config.max_steps:
            row = self.step()
            if self.state.step % self.config.eval_every == 0 or self.state.step == self.config.max_steps:
                held = self.held_out_loss()
                row["held_out_loss"] = held
                if held is not None and (self.state.best_held_out is None or held < self.state.best_held_out):
                    self.state.best_held_out = held
            self.state.history.append(row)
            self._log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
            if "held_out_loss" in row:
                self.save()
        bar.close()
        self.save()
        return self.state

    def _log(self, row: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / LOG_FILE
        columns = ["step", "train_loss", "held_out_loss", "grad_norm", "update_norm", "seconds"] + \
                  [f"gate_{i}" for i in self.patch.layers]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def plot_log(log_csv: str | os.PathLike, out_png: str | os.PathLike, gate_floor: float = 0.0) -> None:
    """Loss over steps and gate values over steps (with the floor), like the study's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, (ax_loss, ax_gate) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(steps, [float(r["train_loss"]) for r in rows], label="train")
    held = [(int(r["step"]), float(r["held_out_loss"])) for r in rows if r.get("held_out_loss")]
    if held:
        ax_loss.plot(*zip(*held), marker="o", label="held-out")
    ax_loss.set(xlabel="step", ylabel="next-token loss", title="loss")
    ax_loss.legend()
    for key in [k for k in rows[0] if k.startswith("gate_")]:
        ax_gate.plot(steps, [float(r[key]) for r in rows], label=key.replace("gate_", "layer "))
    if gate_floor > 0:
        ax_gate.axhline(gate_floor, color="grey", ls="--", label="floor")
    ax_gate.set(xlabel="step", ylabel="sigmoid gate", title="gates")
    ax_gate.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def mean_ci(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and normal-approximation half-width of its 95% confidence interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, z * math.sqrt(var / n)
