"""`titans-lsp train`: frozen-base Titans memory training on repository-grouped code."""

import argparse

from titans_lsp.commands import (add_model_arguments, memory_checkpoint_from, memory_config_from, number_at_least, number_in,
                               positive_int, whole_number)

HELP = "train the Titans memory on repository-grouped code with the base model frozen"
DESCRIPTION = HELP + """

Each --data directory and each pinned --pypi package is one repository. For every file after a
repository's first, the loss is the base model's next-token loss with the memory primed by the
repository's earlier files (definitions-first order); the memory resets between repositories.
Only the memory's read path learns. The output directory holds the memory parameters
(safetensors + config.json, loadable with --memory-checkpoint), the trainer state for --resume,
train_log.csv, heldout_log.csv, loss.png and gates.png.

Data-parallel: under torchrun each process takes batch-size / N of every step's repository streams and
the memory parameters' gradients are all-reduced (DistributedDataParallel over the memory alone; NCCL on
GPUs, gloo on CPUs); rank 0 evaluates and writes --out, which every rank reads on --resume.

example:
  titans-lsp train --pypi attrs==25.3.0 click==8.2.1 ... --out runs/smollm2 --max-steps 300 --seq-len 128
  torchrun --nproc_per_node 8 -m titans_lsp train --model Qwen3.5-9B-Base/ --batch-size 8 --gradient-checkpointing ...
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--data", nargs="+", default=[], metavar="DIR", help="repository directories (one repository each)")
    data.add_argument("--pypi", nargs="+", default=[], metavar="NAME==VERSION",
                      help="pinned PyPI packages, downloaded with pip (no dependencies) into the cache; one repository each")
    data.add_argument("--pypi-file", default=None, help="a file with one NAME==VERSION per line (# comments allowed)")
    data.add_argument("--extensions", default=".py", help="comma-separated source file extensions (default .py)")
    data.add_argument("--require-intra-imports", action="store_true",
                      help="keep only repositories whose files import each other")
    data.add_argument("--heldout", type=number_at_least(0), default=0.2,
                      help="held-out repositories: a fraction (< 1) or a count (default 0.2)")
    data.add_argument("--seq-len", type=whole_number(2), default=256, help="tokens per file; longer files are truncated (default 256)")
    data.add_argument("--max-files-per-repo", type=positive_int, default=16, help="first N files of each repository (default 16)")
    data.add_argument("--heldout-max-files", type=positive_int, default=8, help="files per held-out repository (default 8)")
    opt = parser.add_argument_group("training")
    opt.add_argument("--out", required=True, help="output directory (checkpoint, logs, figures)")
    opt.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    opt.add_argument("--max-steps", type=positive_int, default=1000,
                     help="optimizer steps, each one file of --batch-size repository streams (default 1000)")
    opt.add_argument("--batch-size", type=positive_int, default=1,
                     help="repository streams (one file each) per optimizer step, over all torchrun processes (default 1)")
    opt.add_argument("--gradient-checkpointing", action="store_true",
                     help="recompute the decoder layers during the backward: far less memory for long files (9B on a GPU)")
    opt.add_argument("--time-limit", type=number_in(0), default=None, metavar="MINUTES",
                     help="stop (evaluated and checkpointed, resumable) after this many minutes")
    opt.add_argument("--lr", type=number_in(0), default=1e-3)
    opt.add_argument("--weight-decay", type=number_at_least(0), default=0.0)
    opt.add_argument("--warmup-steps", type=whole_number(0), default=20)
    opt.add_argument("--inner-loop", choices=["first-order", "second-order"], default="first-order",
                     help="first-order (the study): the memory written from earlier files is a constant; "
                          "second-order: gradients flow through the memory update")
    opt.add_argument("--gate-floor", type=float, default=None,
                     help="open gate value = floor + (1 - floor) * sigmoid(g) (MemoryConfig.gate_floor; kept in the checkpoint)")
    opt.add_argument("--gate-lr-scale", type=number_in(0), default=10.0, help="the gates' learning rate relative to --lr (default 10)")
    opt.add_argument("--eval-every", type=positive_int, default=50)
    opt.add_argument("--checkpoint-every", type=positive_int, default=50)
    opt.add_argument("--seed", type=int, default=0)
    mem = parser.add_argument_group("memory")
    mem.add_argument("--memory-config", default=None,
                     help="JSON object of MemoryConfig fields (e.g. '{\"update_rule\": \"titans\"}'), or a path to a config.json")
    mem.add_argument("--memory-checkpoint", default=None, help="start from these trained memory parameters")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_specs(args: argparse.Namespace) -> list[str]:
    from pathlib import Path

    from titans_lsp.cli import UserError

    specs = list(args.pypi)
    if args.pypi_file:
        try:
            lines = Path(args.pypi_file).read_text().splitlines()
        except OSError as exc:
            raise UserError(f"cannot read --pypi-file: {exc}") from exc
        specs += [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    return specs


def memory_config(args: argparse.Namespace):
    """MemoryConfig from --memory-checkpoint's config, then --memory-config fields, then --gate-floor;
    each error names the flag it comes from, as in the other commands."""
    import dataclasses

    from titans_lsp.cli import UserError
    from titans_lsp.model.patching import load_memory_config

    memory_checkpoint_from(args.memory_checkpoint)  # readable, config included: load_memory_config cannot fail
    base = load_memory_config(args.memory_checkpoint).to_dict() if args.memory_checkpoint else {}
    config = memory_config_from(args.memory_config, base)
    if config.update_rule == "ntp":
        raise UserError("--memory-config: the ntp rule trains its memory at test time (while priming) and has no "
                        "parameters to train offline; use it with `titans-lsp eval/serve/prime --memory-config`")
    if args.gate_floor is not None:  # applied by the memory itself, so it holds at inference too
        try:
            config = dataclasses.replace(config, gate_floor=args.gate_floor)  # validated again
        except ValueError as exc:
            raise UserError(f"--gate-floor: {exc}") from None
    return config


def run(args: argparse.Namespace) -> int:
    from titans_lsp import distributed

    dist = distributed.from_env(args.device)
    try:
        return _run(args, dist)
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, dist) -> int:
    import json
    from pathlib import Path

    import torch

    from titans_lsp import distributed
    from titans_lsp.cli import UserError
    from titans_lsp.model.loading import load_model
    from titans_lsp.model.patching import install_memory
    from titans_lsp.model.training import TrainConfig, train
    from titans_lsp.model.training_data import DataError, load_repositories, split_repositories, tokenize_repository
    from titans_lsp.paths import cache_root

    memory = memory_config(args)  # a bad --memory-config / --memory-checkpoint: before downloads and the model
    extensions = tuple(e if e.startswith(".") else "." + e for e in args.extensions.split(",") if e)
    repos, problem = None, None
    for turn in (True, False):  # rank 0 downloads into the shared cache first, then the others read it
        if dist.is_main == turn:
            try:
                repos = load_repositories(args.data, read_specs(args), cache_root(args.cache_dir), extensions,
                                          require_intra_imports=args.require_intra_imports)
            except DataError as exc:
                problem = str(exc)
        dist.barrier()
    if problem:
        raise UserError(problem)
    train_repos, heldout_repos = split_repositories(repos, args.heldout, args.seed)
    try:
        config = TrainConfig(max_steps=args.max_steps, lr=args.lr, weight_decay=args.weight_decay,
                             warmup_steps=args.warmup_steps, seq_len=args.seq_len,
                             max_files_per_repo=args.max_files_per_repo, inner_loop=args.inner_loop,
                             gate_lr_scale=args.gate_lr_scale, eval_every=args.eval_every,
                             checkpoint_every=args.checkpoint_every, heldout_max_files=args.heldout_max_files,
                             seed=args.seed, batch_size=args.batch_size,
                             gradient_checkpointing=args.gradient_checkpointing)
    except ValueError as exc:
        raise UserError(str(exc)) from exc

    lm = load_model(args.model, device=distributed.device_for(args.device, dist), dtype=args.dtype, cache_dir=args.cache_dir)
    torch.manual_seed(args.seed)
    patch = install_memory(lm.model, memory)
    if args.memory_checkpoint:
        patch.load_parameters(args.memory_checkpoint)

    def tokens(rs, max_files):
        return [tokenize_repository(r, lm.tokenizer, args.seq_len, max_files) for r in rs]

    train_ids = tokens(train_repos, args.max_files_per_repo)
    heldout_ids = tokens(heldout_repos, args.heldout_max_files)
    names = {"train": [r.name for r in train_repos], "heldout": [r.name for r in heldout_repos]}
    out = Path(args.out)
    manifest = {"model": lm.source.label if hasattr(lm.source, "label") else str(args.model), "model_spec": args.model,
                "repositories": {split: [{"name": r.name, "source": r.source, "files": [f.path for f in r.files[:limit]],
                                          "tokens": sum(map(len, ids))}
                                         for r, ids in zip(rs, idss)]
                                 for split, rs, idss, limit in (("train", train_repos, train_ids, args.max_files_per_repo),
                                                                ("heldout", heldout_repos, heldout_ids, args.heldout_max_files))}}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data.json").write_text(json.dumps(manifest, indent=1))
        print(f"titans-lsp train: {len(train_repos)} training repositories ({sum(map(len, train_ids))} files), "
              f"{len(heldout_repos)} held out; model {manifest['model']}; output {out}"
              + (f"; {dist.world} processes" if dist.enabled else ""))
    try:
        state = train(lm.model, patch, lm.tokenizer, train_ids, heldout_ids, config, out, resume=args.resume,
                      repo_names=names, progress=not args.no_progress,
                      time_limit_s=args.time_limit * 60 if args.time_limit else None, dist=dist)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if not dist.is_main:
        return 0
    last = state.heldout[-1] if state.heldout else None
    summary = f"titans-lsp train: stopped at step {state.step}/{config.max_steps}"
    if last:
        summary += (f"; held-out loss with memory {last['loss_memory']:.4f} vs ablation {last['loss_ablation']:.4f}"
                    f" (delta {last['delta']:+.4f})")
    print(summary + f"; checkpoint in {out}")
    return 0
