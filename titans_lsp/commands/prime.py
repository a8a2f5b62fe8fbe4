"""`titans-lsp prime`: index a workspace and write it into its memory ahead of time.

It does what the server does when it opens a folder in a memory mode, into the same per-workspace
state directory, so the editor starts with a ready index and a primed memory."""

from __future__ import annotations

import argparse

from titans_lsp.commands import (add_memory_config_argument, add_model_arguments, memory_checkpoint_from,
                               memory_config_from)

HELP = "index a workspace and prime its memory ahead of time (what the server does on open)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workspace", nargs="?", default=".", help="workspace folder (default: the current directory)")
    add_model_arguments(parser)
    parser.add_argument("--memory-checkpoint", default=None,
                        help="directory with trained memory parameters (must match what the server uses)")
    add_memory_config_argument(parser)
    parser.add_argument("--force", action="store_true", help="reset the memory and prime every file again")
    parser.add_argument("--index-only", action="store_true", help="build or update the index, do not prime")
    parser.add_argument("--dense", action="store_true", help="also encode the chunks for dense retrieval")


def run(args: argparse.Namespace) -> int:
    from titans_lsp.cli import UserError

    try:
        return _run(args)
    except OSError as exc:  # a read-only or full cache: one line that says where, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        raise UserError(f"cannot write the workspace state ({exc.strerror or exc}{where}) "
                        f"(choose a writable --cache-dir)") from None


def _run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from tqdm import tqdm

    from titans_lsp.cli import UserError
    from titans_lsp.folder import FolderState

    root = Path(args.workspace).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    memory_config = None
    if not args.index_only:  # bad memory flags: before indexing, not after it
        memory_checkpoint_from(args.memory_checkpoint)
        memory_config = memory_config_from(args.memory_config)
    state = FolderState(root.resolve().as_uri(), root, args.cache_dir)

    started = time.perf_counter()
    with tqdm(desc="indexing", unit="file") as bar:
        state.load_index(_progress_to(bar))
    print(f"indexed {len(state.index.files())} files ({state.index.num_chunks()} chunks) in "
          f"{time.perf_counter() - started:.1f} s -> {state.state_dir}")
    if args.dense:
        with tqdm(desc="dense", unit="chunk") as bar:
            state.index.build_dense(_progress_to(bar))
        state.save_index()
    if args.index_only:
        return 0

    from titans_lsp.engine import CompletionEngine
    from titans_lsp.priming import Primer

    engine = CompletionEngine.load(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir,
                                   memory_checkpoint=args.memory_checkpoint,
                                   memory_config=memory_config)
    started = time.perf_counter()
    with tqdm(desc="priming", unit="file") as bar:
        result = Primer(state, engine).run(force=args.force, progress=_progress_to(bar))
    print(f"primed {result.primed} files ({result.skipped} already primed) in {time.perf_counter() - started:.1f} s; "
          f"{len(state.primed)} files in memory")
    return 0


def _progress_to(bar):
    """A ``progress(done, total)`` callback that drives a tqdm bar."""
    def report(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
    return report
