"""`titans-lsp doctor`: check that everything the server needs is present and loads."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

from titans_lsp.commands import add_backend_arguments, add_model_arguments, backend_config

HELP = "check Python, torch, the default model, the dense retriever, tree-sitter and the cache"
DESCRIPTION = HELP + ".\nExits non-zero with one line per missing piece."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    from titans_lsp.backends.config import SERVE_DEFAULT_BACKEND

    add_backend_arguments(parser, default=SERVE_DEFAULT_BACKEND)
    parser.add_argument("--dense-model", default="default", help="sentence-transformers model to check (default: all-MiniLM-L6-v2 wheel)")
    parser.add_argument("--no-load", action="store_true", help="resolve the model without loading it (fast)")


def _check_torch() -> str:
    import torch

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads"


def _check_transformers() -> str:
    import transformers

    return f"transformers {transformers.__version__}"


def _check_model(args: argparse.Namespace) -> Callable[[], str]:
    def check() -> str:
        from titans_lsp.model.loading import load_model, resolve_model

        source = resolve_model(args.model)
        if args.no_load:
            return f"{source.label} (not loaded: --no-load)"
        start = time.perf_counter()
        loaded = load_model(args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir)
        params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
        return (f"{source.label}: {type(loaded.model).__name__}, {params:.1f} M parameters, "
                f"{loaded.dtype} on {loaded.device}, loaded in {time.perf_counter() - start:.1f} s")
    return check


def _check_backend(args: argparse.Namespace) -> Callable[[], str]:
    """A remote backend end to end: started or reached, its model loaded, one token generated."""
    def check() -> str:
        from titans_lsp.backends import create_backend

        backend = create_backend(backend_config(args), model=args.model, device=args.device, dtype=args.dtype,
                                 cache_dir=args.cache_dir)
        try:
            return f"{args.backend}: {backend.check()}"
        finally:
            backend.close()
    return check


def _check_auto_without_loading(args: argparse.Namespace) -> Callable[[], str]:
    """`auto` with --no-load: what it would run (serve's own plan line), without starting anything."""
    def check() -> str:
        from titans_lsp.backends.auto import planned_serving

        return f"auto: {planned_serving(backend_config(args), args.model)}"
    return check


def _backend_checks(args: argparse.Namespace) -> list[tuple[str, Callable[[], str]]]:
    """local: the model; a remote backend: that backend end to end; auto: both (it runs a local model too)."""
    if args.backend == "local":
        return [("model", _check_model(args))]
    if args.backend != "auto":
        return [("backend", _check_backend(args))]
    return [("model", _check_model(args)),
            ("backend", _check_auto_without_loading(args) if args.no_load else _check_backend(args))]


def _check_dense(args: argparse.Namespace) -> Callable[[], str]:
    def check() -> str:
        from titans_lsp.retrieval.dense import load_encoder, resolve_dense_model

        encoder = load_encoder(args.dense_model)
        dim = encoder.encode(["def f(): pass"]).shape[-1]
        return f"{resolve_dense_model(args.dense_model)} (dim {dim})"
    return check


def _check_tree_sitter() -> str:
    import tree_sitter

    from titans_lsp.retrieval.languages import grammar_status, parser

    python = parser("python")
    if python is None or python.parse(b"def f(x):\n    return x\n").root_node.has_error:
        raise RuntimeError("the Python grammar failed to parse a trivial function")
    missing = {name: why for name, why in grammar_status().items() if why != "ok"}
    if missing:  # the registry reads these languages as plain text until the wheel is installed
        raise RuntimeError("grammars missing: " + ", ".join(f"{name} ({why})" for name, why in missing.items()))
    return f"tree-sitter {getattr(tree_sitter, '__version__', '?')}, grammars OK: {', '.join(grammar_status())}"


def _check_cache(args: argparse.Namespace) -> Callable[[], str]:
    def check() -> str:
        from titans_lsp.paths import cache_root

        root = cache_root(args.cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".doctor-write-test"
        probe.write_text("ok")
        probe.unlink()
        return f"{root} (writable)"
    return check


def run(args: argparse.Namespace) -> int:
    checks: list[tuple[str, Callable[[], str]]] = [
        ("python", lambda: f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"),
        ("torch", _check_torch),
        ("transformers", _check_transformers),
        ("cache", _check_cache(args)),
        *_backend_checks(args),
        ("dense retriever", _check_dense(args)),
        ("tree-sitter", _check_tree_sitter),
    ]
    failures = 0
    for name, check in checks:
        try:
            print(f"ok    {name:16} {check()}", flush=True)
        except Exception as exc:  # noqa: BLE001 - doctor reports every failure as one line
            failures += 1
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"FAIL  {name:16} {reason}", flush=True)
    if failures:
        print(f"{failures} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0
