"""`titans-lsp train`: train the Titans memory on repository-grouped code with the base model frozen."""

from __future__ import annotations

import argparse

from titans_lsp.commands import add_model_arguments

HELP = "train the Titans memory on repository-grouped code with the base model frozen"
DESCRIPTION = HELP + """.

Each --data DIR is one repository (use --data-root for a folder of repositories; --pypi NAME==VERSION
downloads and unpacks a package as one repository). Files go into memory definitions-first; the
memory resets between repositories. Only the memory's retrieve projections, gates and output
projections train (first-order inner loop). --out holds the checkpoint (memory parameters +
config.json, optimizer, trainer.json), log.csv and curves.png; rerunning with the same --out resumes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--data", nargs="+", default=[], metavar="DIR", help="repository directories (one repository each)")
    parser.add_argument("--data-root", nargs="+", default=[], metavar="DIR", help="folders whose subfolders are repositories")
    parser.add_argument("--pypi", nargs="+", default=[], metavar="NAME==VERSION", help="pinned PyPI packages, one repository each")
    parser.add_argument("--out", required=True, help="checkpoint directory (resumes if it holds one)")
    parser.add_argument("--held-out", type=int, default=2, help="repositories kept out of training for the held-out loss")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--max-file-tokens", type=int, default=1024)
    parser.add_argument("--max-files", type=int, default=40, help="files per repository (definitions first)")
    parser.add_argument("--memory-dim", type=int, default=512)
    parser.add_argument("--update-rule", choices=["sgd", "titans"], default="sgd")
    parser.add_argument("--integration", choices=["additive", "mag"], default="additive")
    parser.add_argument("--retrieve", choices=["separate", "tied"], default="separate")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="memory layers (default: the model's)")
    parser.add_argument("--gate-floor", type=float, default=0.0)
    parser.add_argument("--inner-loop", choices=["first_order", "second_order"], default="first_order")


def _pypi_repository(spec: str, cache_dir):
    """Download (pip, no dependencies) and unpack one pinned package; returns its directory."""
    import subprocess
    import sys
    import tarfile
    import zipfile

    from titans_lsp.cli import UserError
    from titans_lsp.paths import cache_root

    if "==" not in spec:
        raise UserError(f"--pypi needs a pinned NAME==VERSION, got {spec!r}")
    target = cache_root(cache_dir) / "pypi" / spec.replace("==", "-")
    if target.is_dir() and any(target.iterdir()):
        return target
    download = target.with_name(target.name + ".download")
    download.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(download), spec],
                            capture_output=True, text=True)
    files = sorted(download.iterdir())
    if result.returncode != 0 or not files:
        raise UserError(f"cannot download {spec} from PyPI: {(result.stderr.strip().splitlines() or ['no file'])[-1]}")
    archive = files[0]
    target.mkdir(parents=True, exist_ok=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(target)
    else:
        with tarfile.open(archive) as t:
            t.extractall(target, filter="data")
    return target


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from titans_lsp.cli import UserError
    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory, read_checkpoint_info
    from titans_lsp.model.training import TrainConfig, Trainer, load_repository, plot_log

    dirs = [Path(d) for d in args.data]
    for root in args.data_root:
        if not Path(root).is_dir():
            raise UserError(f"--data-root {root} is not a directory")
        dirs += sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    dirs += [_pypi_repository(spec, args.cache_dir) for spec in args.pypi]
    if not dirs:
        raise UserError("no data: pass --data DIR ..., --data-root DIR or --pypi NAME==VERSION ...")
    repos = []
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"data directory not found: {d}")
        repo = load_repository(d, max_files=args.max_files)
        if len(repo.files) >= 2:
            repos.append(repo)
        else:
            print(f"skipping {d}: fewer than two readable .py files")
    if not repos:
        raise UserError("no repository has at least two readable .py files")
    held_n = min(args.held_out, len(repos) - 1)
    train, held = repos[: len(repos) - held_n], repos[len(repos) - held_n:]
    try:
        train_config = TrainConfig(lr=args.lr, max_steps=args.max_steps, max_file_tokens=args.max_file_tokens,
                                   seed=args.seed, eval_every=args.eval_every, inner_loop=args.inner_loop)
    except NotImplementedError as exc:
        raise UserError(str(exc)) from None

    import torch

    torch.manual_seed(args.seed)
    lm = load_model(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir)
    out = Path(args.out)
    if (out / "trainer.json").is_file():
        config = MemoryConfig.from_dict(read_checkpoint_info(out)["memory_config"])
    else:
        config = MemoryConfig(memory_dim=args.memory_dim, update_rule=args.update_rule, integration=args.integration,
                              retrieve=args.retrieve, layers=args.layers, gate_floor=args.gate_floor, seed=args.seed)
    patch = install_memory(lm.model, config)
    try:
        trainer = Trainer(patch, lm.tokenizer, train, held, train_config, out)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if trainer.resume():
        print(f"resuming from {out} at step {trainer.state.step}")
    print(f"training on {len(train)} repositories, {len(held)} held out; memory layers {patch.layers}")
    state = trainer.train(progress=True)
    plot_log(out / "log.csv", out / "curves.png", gate_floor=config.gate_floor)
    last = state.history[-1] if state.history else {}
    print(f"done: step {state.step}, train loss {last.get('train_loss', float('nan')):.4f}, "
          f"best held-out loss {state.best_held_out}, gates {patch.gate_values()}; checkpoint in {out}")
    return 0
