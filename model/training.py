"""Frozen-base training of the Titans memory's read path on repository-grouped code.

The objective is the study's: for each file of a repository, the next-token loss of the frozen base
model with the memory primed by the repository's earlier files. The memory state persists across a
repository's files and resets between repositories. Only the patch's trainable parameters (retrieve
projections, gates, output projection, whatever ``patch.trainable_parameters()`` returns) learn.

Inner loop:
- ``first-order`` (the study): the state written from earlier files is a constant for the loss
  (written with ``patch.prime`` under ``no_grad``); gradients reach the read path only.
- ``second-order``: gradients also flow through the memory update into the write path
  (``patch.prime(..., create_graph=True)``): through the keys and values of the previous file's
  write, the reads that shaped its hidden states, and the ``titans`` rule's rate maps. The graph is
  one write deep: the state is detached after each optimizer step (truncated backpropagation).
  It keeps the previous file's forward graph alive, so it costs roughly twice the memory of first order.

One optimizer step = the loss on one file (files after a repository's first). Checkpoints hold the
memory parameters alone (``patch.save_parameters``: safetensors + config.json) plus a small trainer
state (step, data position, held-out losses, optimizer), so training resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"
TRAIN_LOG = "train_log.csv"
HELDOUT_LOG = "heldout_log.csv"


@dataclass
class TrainConfig:
    max_steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    grad_clip: float = 1.0
    seq_len: int = 256  # tokens per file (longer files are truncated)
    max_files_per_repo: int = 16
    chunk_tokens: int = 512  # priming chunk size
    inner_loop: str = "first-order"  # or "second-order"
    gate_lr_scale: float = 10.0  # the gates' learning rate = lr * gate_lr_scale
    eval_every: int = 50
    checkpoint_every: int = 50
    heldout_max_files: int = 8
    seed: int = 0
    batch_size: int = 1  # repository streams per optimizer step (over all data-parallel processes)
    gradient_checkpointing: bool = False  # recompute decoder layers in the backward: long files on a GPU

    def __post_init__(self) -> None:
        if self.inner_loop not in ("first-order", "second-order"):
            raise ValueError(f"inner_loop must be 'first-order' or 'second-order', not {self.inner_loop!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")


@dataclass
class Position:
    """Where the data stream stands: epoch, index into that epoch's repository order, file index."""
    epoch: int = 0
    repo: int = 0
    file: int = 0


@dataclass
class TrainerState:
    step: int = 0
    position: Position = field(default_factory=Position)  # of the first stream (the only one at batch size 1)
    positions: list[Position] = field(default_factory=list)  # every stream's next file, in stream order
    heldout: list[dict] = field(default_factory=list)  # one entry per evaluation
    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # repository names, for a resume sanity check

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        raw = json.loads(text)
        raw["position"] = Position(**raw["position"])
        raw["positions"] = [Position(**p) for p in raw.get("positions", [])]
        return cls(**raw)


# ---- the data stream ---------------------------------------------------------------------------

def repo_order(num_repos: int, epoch: int, seed: int) -> list[int]:
    """The repository visiting order of one epoch (seeded, different every epoch)."""
    order = list(range(num_repos))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def stream(train: list[list[list[int]]], seed: int, start: Position, part: int = 0,
           parts: int = 1) -> Iterator[tuple[Position, list[int]]]:
    """Yield (position, file token ids) forever: repositories in seeded order, each repository's files
    in their definitions-first order. Starts at ``start`` (a resumed run). With ``parts`` > 1, only the
    repositories at order positions ``part``, ``part + parts``, ... (one stream of a batch)."""
    epoch = start.epoch
    first = True
    while True:
        order = repo_order(len(train), epoch, seed)
        for r in range(start.repo if first else 0, len(order)):
            if r % parts != part:
                continue
            files = train[order[r]]
            for f in range(start.file if first and r == start.repo else 0, len(files)):
                yield Position(epoch, r, f), files[f]
        first = False
        epoch += 1


# ---- loss, priming, gates ------------------------------------------------------------------------

def file_loss(model, patch, state, ids: list[int], gates: str = "open") -> tuple[torch.Tensor, int]:
    """Mean next-token loss on one file with the memory ``state`` read (not written)."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    with patch.activate(state, gates=gates):
        logits = model(input_ids=input_ids).logits
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])
    return loss, len(ids) - 1


def prime_file(patch, state, ids: list[int], tokenizer, chunk_tokens: int, differentiable: bool):
    """Write one file into the memory. First order: under no_grad, the state is a constant for later losses."""
    if differentiable:
        return patch.prime(state, [ids], tokenizer, chunk_tokens=chunk_tokens, create_graph=True)
    with torch.no_grad():
        return patch.prime(state, [ids], tokenizer, chunk_tokens=chunk_tokens)


def supports_differentiable_write(patch) -> bool:
    try:
        return "create_graph" in inspect.signature(patch.prime).parameters
    except (TypeError, ValueError):
        return False


def detach_state(state) -> None:
    """Cut the graph held by a state after a second-order step (so the next step does not backprop into it)."""
    if hasattr(state, "detach_"):
        state.detach_()


def gate_floor(patch) -> float | None:
    """The floor the memory applies to its open gates (MemoryConfig.gate_floor), for the figures."""
    floor = getattr(getattr(patch, "config", None), "gate_floor", None)
    return float(floor) if floor else None


def param_groups(params: list[torch.nn.Parameter], lr: float, gate_lr_scale: float) -> list[dict]:
    """Scalar parameters (the per-layer gates) get their own learning rate: with the matrices' rate a gate
    logit moves by about lr per step, too little to open or close within a short run."""
    gates = [p for p in params if p.ndim == 0]
    rest = [p for p in params if p.ndim > 0]
    return [g for g in ({"params": rest, "lr": lr}, {"params": gates, "lr": lr * gate_lr_scale}) if g["params"]]


def freeze_base(model, patch) -> list[torch.nn.Parameter]:
    """requires_grad only on the patch's trainable parameters; returns them."""
    trainable = list(patch.trainable_parameters())
    ids = {id(p) for p in trainable}
    for p in model.parameters():
        if id(p) not in ids:
            p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    return trainable


# ---- held-out evaluation -------------------------------------------------------------------------

@torch.no_grad()
def heldout_loss(model, patch, tokenizer, repos: list[list[list[int]]], chunk_tokens: int,
                 gates: tuple[str, ...] = ("open", "shut")) -> dict[str, float]:
    """Token-weighted mean loss on held-out repositories' files after the first, with the memory primed
    by each repository's earlier files; one number per gate setting."""
    totals = {g: 0.0 for g in gates}
    tokens = 0
    for files in repos:
        state = patch.new_state()
        for i, ids in enumerate(files):
            if i > 0:
                for g in gates:
                    loss, n = file_loss(model, patch, state, ids, gates=g)
                    totals[g] += loss.item() * n
                tokens += len(ids) - 1
            if i < len(files) - 1:
                patch.prime(state, [ids], tokenizer, chunk_tokens=chunk_tokens)
    return {g: totals[g] / max(tokens, 1) for g in gates} | {"tokens": tokens}


# ---- checkpoints ---------------------------------------------------------------------------------

def save_checkpoint(out: Path, patch, optimizer, scheduler, trainer: TrainerState) -> None:
    """Memory parameters (safetensors + config.json), optimizer and trainer state, written to a temporary
    directory and then moved into ``out`` file by file, so an interrupted save never leaves a mixed checkpoint
    behind the trainer state (it is written last)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".checkpoint-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    patch.save_parameters(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / OPTIMIZER_STATE)
    (tmp / TRAINER_STATE).write_text(trainer.to_json())
    for item in sorted(tmp.iterdir(), key=lambda p: p.name == TRAINER_STATE):
        os.replace(item, out / item.name)
    tmp.rmdir()


def _damaged(out: Path, name: str, exc: BaseException) -> ValueError:
    """A file of the run that cannot be read (a crash mid-write, a copy cut short): the train command
    shows ValueErrors as one line, so this names the file and the way out instead of a traceback."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # torch's unpickling errors run to many lines
    return ValueError(f"cannot resume {out}: {name} is damaged ({reason}); train into another --out to start over")


def _resume_state(out: Path, patch, optimizer, scheduler) -> None:
    """The memory parameters, optimizer, scheduler and RNG of the run in ``out``."""
    from titans_lsp.model.patching import PARAMS_FILE

    try:
        patch.load_parameters(out)
    except ValueError:
        raise  # a checkpoint of another config or model: its own message says so
    except Exception as exc:  # safetensors' and json's own errors
        raise _damaged(out, PARAMS_FILE, exc) from None
    try:
        saved = torch.load(out / OPTIMIZER_STATE, weights_only=True)  # tensors and numbers only: a crafted file cannot run code
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
    except Exception as exc:  # a truncated pickle: OSError, EOFError, UnpicklingError, RuntimeError
        raise _damaged(out, OPTIMIZER_STATE, exc) from None


def load_trainer_state(out: Path) -> TrainerState | None:
    path = Path(out) / TRAINER_STATE
    return TrainerState.from_json(path.read_text()) if path.exists() else None


# ---- logs and figures ----------------------------------------------------------------------------

class CsvLog:
    """Append-only CSV whose header is fixed by the first row; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.fields: list[str] | None = None
        if resume_step is not None and path.exists():
            with path.open() as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                rows = [r for r in reader if int(r["step"]) <= resume_step]
            self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows: list[dict]) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
            self._rewrite([])
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def plot_training(out: Path, gate_floor: float | None = None) -> list[Path]:
    """loss.png (train loss, smoothed, and held-out loss memory vs ablation) and gates.png (gate value per
    memory layer over steps, with the floor), like the study's figures. Without matplotlib (a bare GPU machine
    running the package with --no-deps) the figures are skipped with a log line; the CSV logs hold the data."""
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: no loss.png / gates.png (the CSV logs in %s have the data)", out)
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_csv(out / TRAIN_LOG)
    held = read_csv(out / HELDOUT_LOG)
    written = []
    if train or held:
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            steps = [int(r["step"]) for r in train]
            loss = [float(r["loss"]) for r in train]
            ax.plot(steps, loss, alpha=0.25, color="C0", label="train (per file)")
            k = min(len(loss), max(5, len(loss) // 20))  # per-file losses vary mostly with the file
            smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
            ax.plot(steps, smooth, color="C0", label=f"train (mean of {k})")
        if held:
            hs = [int(r["step"]) for r in held]
            ax.plot(hs, [float(r["loss_memory"]) for r in held], "o-", color="C1", label="held-out, memory")
            ax.plot(hs, [float(r["loss_ablation"]) for r in held], "s--", color="C2", label="held-out, ablation")
        ax.set_xlabel("step")
        ax.set_ylabel("next-token loss (nats)")
        ax.set_title("Memory training: loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=120)
        plt.close(fig)
        written.append(out / "loss.png")
    gate_cols = [c for c in (train[0].keys() if train else []) if c.startswith("gate_L")]
    if gate_cols:
        fig, ax = plt.subplots(figsize=(7, 4))
        steps = [int(r["step"]) for r in train]
        for c in gate_cols:
            ax.plot(steps, [float(r[c]) for r in train], label=f"layer {c[len('gate_L'):]}")
        if gate_floor is not None:
            ax.axhline(gate_floor, color="k", linestyle=":", label=f"floor {gate_floor:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("gate value sigma(g)")
        ax.set_title("Memory gates over training")
        ax.legend(fontsize="small", ncol=2)
        fig.tight_layout()
        fig.savefig(out / "gates.png", dpi=120)
        plt.close(fig)
        written.append(out / "gates.png")
    return written


# ---- the loop --------------------------------------------------------------------------------------

def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Linear warmup, then cosine decay to 10% over max_steps."""
    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


class _FileLoss(torch.nn.Module):
    """The training forward as a module whose only registered parameters are the memory's: wrapped in
    DistributedDataParallel it all-reduces the memory parameters alone, never the frozen base model (held
    in a tuple, so not registered)."""

    def __init__(self, model, patch):
        super().__init__()
        self.memory = patch.memory
        self._held = (model, patch)

    def forward(self, state, ids: list[int]) -> tuple[torch.Tensor, int]:
        model, patch = self._held
        return file_loss(model, patch, state, ids, gates="open")


def readable_state(patch, state):
    """The state a training loss reads. With ``train_init_weights`` each weight reads as
    ``w + (p - p.detach())`` for the memory's initial-weight parameter ``p``: the same value, and a gradient
    that reaches ``p`` one to one. A state is a detached copy of the initial weights plus what the writes
    added (a constant under first-order training), so without this the initial weights never learn."""
    if not getattr(patch.config, "train_init_weights", False):
        return state
    weights = {i: [w + (p.float() - p.float().detach()) for w, p in zip(ws, patch.memory[str(i)].initial_weights)]
               for i, ws in state.weights.items()}
    return dataclasses.replace(state, weights=weights)


def set_gradient_checkpointing(model, on: bool) -> bool:
    """Non-reentrant activation checkpointing on the decoder layers (frozen inputs need no requires_grad);
    returns whether the model reports it on. transformers 5.24 calls it activation checkpointing; older
    5.x only has the gradient_checkpointing_* names."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


class _RepoStream:
    """One stream of training files (one part of every epoch's repository order) and its memory state.
    A batch of ``batch_size`` streams makes one optimizer step; data-parallel ranks own disjoint streams."""

    def __init__(self, train_repos, seed: int, start: Position, part: int, parts: int, patch, prime):
        self.files = stream(train_repos, seed, start, part, parts)
        self.patch, self.prime = patch, prime
        self.state = patch.new_state()
        self.current = (start.epoch, start.repo)
        self.position = start  # of the next file to read
        if start.file > 0:  # rebuild the memory of the repository we stopped inside: re-prime its earlier files
            order = repo_order(len(train_repos), start.epoch, seed)
            for ids in train_repos[order[start.repo]][:start.file]:
                prime(self.state, ids, False)

    def next_loss_file(self) -> tuple[Position, list[int]]:
        """The next file that gets a loss (not a repository's first), priming first files on the way."""
        for pos, ids in self.files:
            if (pos.epoch, pos.repo) != self.current:  # next repository: fresh memory
                self.state = self.patch.new_state()
                self.current = (pos.epoch, pos.repo)
            self.position = pos
            if pos.file > 0:
                return pos, ids
            self.prime(self.state, ids, None)
            self.position = Position(pos.epoch, pos.repo, 1)
        raise RuntimeError("the training stream ended")  # stream() is endless


def train(model, patch, tokenizer, train_repos: list[list[list[int]]], heldout_repos: list[list[list[int]]],
          config: TrainConfig, out: str | os.PathLike, resume: bool = False, repo_names: dict | None = None,
          progress: bool = True, stop_at_step: int | None = None, time_limit_s: float | None = None,
          dist=None) -> TrainerState:
    """Train the patch's read path; returns the final trainer state. ``*_repos`` are token ids per file per
    repository, files already in definitions-first order and truncated to ``config.seq_len``.
    ``stop_at_step`` and ``time_limit_s`` end the run early (evaluated and checkpointed, so ``resume`` continues it)
    without changing the learning-rate schedule, which ``max_steps`` sets.

    ``dist`` (:class:`titans_lsp.distributed.Distributed`, from ``torchrun``): data-parallel training. The
    ``config.batch_size`` streams of a step are split over the ranks, DistributedDataParallel all-reduces the
    memory parameters' gradients, and rank 0 alone evaluates and writes ``out``; the parameters after N steps
    are those of one process running the whole batch."""
    from tqdm import tqdm

    from titans_lsp.distributed import SINGLE

    dist = dist or SINGLE
    out = Path(out)
    if not any(len(files) >= 2 for files in train_repos):
        raise ValueError("no training repository has two or more files")
    if config.batch_size % dist.world:
        raise ValueError(f"--batch-size {config.batch_size} must be a multiple of the {dist.world} processes")
    if config.batch_size > len(train_repos):
        raise ValueError(f"--batch-size {config.batch_size} needs at least that many training repositories "
                         f"(there are {len(train_repos)})")
    second_order = config.inner_loop == "second-order"
    if second_order and not supports_differentiable_write(patch):
        raise ValueError("--inner-loop second-order needs a differentiable memory write "
                         "(patch.prime(..., create_graph=True)), which this memory does not offer")
    params = freeze_base(model, patch)
    if not params:
        raise ValueError("the memory patch has no trainable parameters")
    checkpointing = set_gradient_checkpointing(model, True) if config.gradient_checkpointing else False
    if config.gradient_checkpointing and not checkpointing:
        raise ValueError("this model does not support gradient checkpointing")
    # No dropout either way; checkpointing acts only in training mode (the supported models have no dropout).
    model.train(checkpointing)
    optimizer = torch.optim.AdamW(param_groups(params, config.lr, config.gate_lr_scale), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))

    try:
        trainer = load_trainer_state(out) if resume else None
    except (ValueError, TypeError, KeyError) as exc:
        raise _damaged(out, TRAINER_STATE, exc) from None
    if resume and trainer is None:
        raise ValueError(f"nothing to resume in {out}: no {TRAINER_STATE}")
    if trainer is not None:
        if repo_names and trainer.data and trainer.data != repo_names:
            raise ValueError(f"{out} was trained on other repositories; resume with the same data")
        if trainer.config.get("batch_size", 1) != config.batch_size:
            raise ValueError(f"{out} was trained with --batch-size {trainer.config.get('batch_size', 1)}; resume with it")
        _resume_state(out, patch, optimizer, scheduler)
        log.info("resuming %s at step %d", out, trainer.step)
    else:
        if (out / TRAINER_STATE).exists():
            raise ValueError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
        trainer = TrainerState(config=asdict(config), data=repo_names or {})
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
    dist.barrier()  # every rank has read the checkpoint before rank 0 writes the next one

    forward = _FileLoss(model, patch)
    if dist.enabled:
        device = next(model.parameters()).device
        forward = torch.nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    resume_step = trainer.step if resume else None
    train_log = CsvLog(out / TRAIN_LOG, resume_step) if dist.is_main else None
    held_log = CsvLog(out / HELDOUT_LOG, resume_step) if dist.is_main else None
    heldout = [files[:config.heldout_max_files] for files in heldout_repos if len(files) >= 2]
    ablation_cache: dict[str, float] = {}

    def evaluate() -> None:
        if not heldout or not dist.is_main:
            return
        model.eval()
        try:
            gates = ("open",) if ablation_cache else ("open", "shut")  # the ablation equals the frozen base: once
            losses = heldout_loss(model, patch, tokenizer, heldout, config.chunk_tokens, gates)
        finally:
            model.train(checkpointing)
        ablation_cache.setdefault("shut", losses.get("shut", 0.0))
        entry = {"step": trainer.step, "loss_memory": losses["open"], "loss_ablation": ablation_cache["shut"],
                 "delta": ablation_cache["shut"] - losses["open"], "tokens": losses["tokens"]}
        if not trainer.heldout or trainer.heldout[-1]["step"] != trainer.step:
            trainer.heldout.append(entry)
            held_log.write(entry)
        if trainer.heldout and trainer.heldout[-1]["step"] == trainer.step:
            trainer.heldout[-1] = entry

    if trainer.step == 0:
        evaluate()

    def prime(state, ids, differentiable):
        return prime_file(patch, state, ids, tokenizer, config.chunk_tokens,
                          differentiable=second_order if differentiable is None else differentiable)

    starts = trainer.positions or [trainer.position] * config.batch_size
    if len(starts) != config.batch_size:
        raise ValueError(f"the trainer state holds {len(starts)} stream positions for --batch-size {config.batch_size}")
    mine = list(range(dist.rank, config.batch_size, dist.world))  # this rank's streams
    streams = {s: _RepoStream(train_repos, config.seed, starts[s], s, config.batch_size, patch, prime) for s in mine}

    bar = tqdm(total=config.max_steps, initial=trainer.step, desc="train", unit="step",
               disable=not progress or not dist.is_main, dynamic_ncols=True)
    t0 = time.time()
    stopping = False
    scale = dist.world / config.batch_size  # DDP averages over ranks: the step's loss is the mean over its streams
    while trainer.step < config.max_steps and not stopping:
        optimizer.zero_grad(set_to_none=True)
        local_loss, local_tokens, items = 0.0, 0, []
        for k, s in enumerate(mine):
            pos, ids = streams[s].next_loss_file()
            state = readable_state(patch, streams[s].state)
            sync = k == len(mine) - 1 or not dist.enabled
            with (contextlib.nullcontext() if sync else forward.no_sync()), patch.activate(state):
                # Backward inside activate(): checkpointed layers recompute their forward during the backward
                # and must read the same memory as the forward did.
                loss, n = forward(state, ids)
                (loss * scale).backward()
            local_loss += loss.item()
            local_tokens += n
            items.append((s, pos, ids))
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip).item()
        before = [p.detach().clone() for p in params]
        optimizer.step()
        scheduler.step()
        update_norm = math.sqrt(sum((p.detach() - b).pow(2).sum().item() for p, b in zip(params, before)))
        trainer.step += 1
        write_norm = 0.0
        for s, pos, ids in items:
            if second_order:
                detach_state(streams[s].state)
            stats = prime(streams[s].state, ids, None)
            write_norm = max(write_norm, float(getattr(stats, "max_update_norm", 0.0) or 0.0))
            streams[s].position = Position(pos.epoch, pos.repo, pos.file + 1)
        step_loss = dist.sum(local_loss) / config.batch_size
        tokens = int(dist.sum(local_tokens))
        write_norm = dist.max(write_norm)
        where = dist.gather([(s, pos, streams[s].position) for s, pos, _ in items])
        where = sorted(item for part in where for item in part)
        trainer.positions = [next_pos for _, _, next_pos in where]
        trainer.position = trainer.positions[0]
        elapsed = dist.broadcast(time.time() - t0)
        stopping = trainer.step == stop_at_step or (time_limit_s is not None and elapsed > time_limit_s)
        last = stopping or trainer.step == config.max_steps
        if dist.is_main:
            row = {"step": trainer.step, "epoch": where[0][1].epoch,
                   "repo": ";".join(order_name(train_repos, pos, config.seed, repo_names) for _, pos, _ in where),
                   "file": ";".join(str(pos.file) for _, pos, _ in where), "tokens": tokens,
                   "loss": round(step_loss, 5), "lr": scheduler.get_last_lr()[0], "grad_norm": round(grad_norm, 6),
                   "update_norm": update_norm, "seconds": round(elapsed, 2), "memory_write_norm": write_norm}
            if next(model.parameters()).is_cuda:
                row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            row |= {f"gate_L{layer}": round(float(v), 6) for layer, v in sorted(patch.gate_values().items())}
            train_log.write(row)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
            if trainer.step % config.eval_every == 0 or last:
                evaluate()
            if trainer.step % config.checkpoint_every == 0 or last:
                save_checkpoint(out, patch, optimizer, scheduler, trainer)
                plot_training(out, gate_floor(patch))
        dist.barrier()
    bar.close()
    if checkpointing:
        set_gradient_checkpointing(model, False)
    model.eval()
    return trainer


def order_name(train_repos, pos: Position, seed: int, repo_names: dict | None) -> str:
    """The training repository's name at ``pos`` (for the log)."""
    index = repo_order(len(train_repos), pos.epoch, seed)[pos.repo]
    names = (repo_names or {}).get("train") or []
    return names[index] if index < len(names) else str(index)
