"""Subcommands of the ``titans-lsp`` CLI (see ``titans_lsp.cli``)."""

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type for a whole number in [low, high] (no upper bound when ``high`` is None): a value
    out of range is refused at parse time instead of failing, or silently misbehaving, mid-run."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {text!r}")
        return value
    return parse


positive_int = whole_number(1)  # counts where 0 or less has no meaning (``--limit -2`` once kept all but 2 samples)


def number_in(low: float, high: float = math.inf, include_low: bool = False) -> Callable[[str], float]:
    """argparse type for a finite number above ``low`` (or at it, with ``include_low``) and at most ``high``:
    a factor, rate or time out of range is refused at parse time, not by a division by zero, a nan or a
    negative value mid-run."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above = value >= low if include_low else value > low
        if not (math.isfinite(value) and above and value <= high):
            bounds = f"{'>=' if include_low else '>'} {low:g}" + ("" if high == math.inf else f" and <= {high:g}")
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, got {text!r}")
        return value
    return parse


def number_at_least(low: float) -> Callable[[str], float]:
    """A finite number >= ``low`` (see :func:`number_in`)."""
    return number_in(low, include_low=True)


def check_output_file(flag: str, out: Path) -> None:
    """A result file flag (eval build --out, bench --out) must name a writable file: checked before
    the downloads or the run it ends, which otherwise ended in a traceback when the file was opened."""
    from titans_lsp.cli import UserError

    if out.is_dir():
        raise UserError(f"{flag} {out}: a directory; give a file path (a name inside it)")
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.open("a").close()
        if not existed:
            out.unlink()  # a failed run leaves no empty file behind
    except OSError as exc:
        raise UserError(f"{flag} {out}: cannot write it ({exc.strerror}); choose a writable path") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags every model-using command shares."""
    parser.add_argument("--model", default="default",
                        help="'default' (embedded SmolLM2-135M), a Hugging Face model directory, a .gguf file, or a hub id")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--cache-dir", default=None,
                        help="cache for converted models and workspace state (default: $XDG_CACHE_HOME/titans-lsp or ~/.cache/titans-lsp)")


def add_memory_config_argument(parser: argparse.ArgumentParser) -> None:
    """--memory-config: which memory variant the memory modes read (model/memory.py MemoryConfig)."""
    parser.add_argument("--memory-config", default=None,
                        help="MemoryConfig fields as a JSON object or a path to a JSON file, e.g. "
                             "'{\"update_rule\": \"ntp\"}' (next-token test-time training) or "
                             "'{\"update_rule\": \"titans\", \"objective\": \"huber\"}'; default: the memory "
                             "checkpoint's config, else MemoryConfig()")


def memory_config_fields(text: str | None) -> dict:
    """The fields --memory-config gives (a JSON object, inline or in a file; {} when not given); a
    UserError on bad input."""
    import json

    from titans_lsp.cli import UserError

    if not text:
        return {}
    try:
        raw = json.loads(Path(text).read_text() if Path(text).is_file() else text)
    except (OSError, ValueError) as exc:
        raise UserError(f"--memory-config: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError("--memory-config: expected a JSON object of MemoryConfig fields")
    return raw


def memory_config_from(text: str | None, base: dict | None = None):
    """The MemoryConfig --memory-config names, its fields over ``base`` (train: a checkpoint's config);
    None when neither is given. The one owner of the "--memory-config:" message (a UserError)."""
    from titans_lsp.cli import UserError
    from titans_lsp.model.memory import MemoryConfig

    if not text and base is None:
        return None
    try:
        return MemoryConfig.from_dict({**(base or {}), **memory_config_fields(text)})
    except (ValueError, TypeError) as exc:
        raise UserError(f"--memory-config: {exc}") from None


def memory_checkpoint_from(path: str | None) -> str | None:
    """``path`` once it reads as a memory checkpoint (None when not given), checked before any model
    loads: its config.json holds a valid MemoryConfig and memory.safetensors' header is whole. The
    engine otherwise opens it at the first memory request, minutes in, with a traceback."""
    from titans_lsp.cli import UserError
    from titans_lsp.model.patching import PARAMS_FILE, load_memory_config

    if not path:
        return None
    try:
        load_memory_config(path)
        from safetensors import safe_open

        with safe_open(str(Path(path) / PARAMS_FILE), "pt") as f:
            f.keys()
    except Exception as exc:  # OSError, JSONDecodeError, KeyError, safetensors' own errors: all mean damaged
        raise UserError(f"--memory-checkpoint {path}: not a readable memory checkpoint ({exc}); "
                        "point it at a directory `titans-lsp train --out` wrote") from None
    return path


def add_backend_arguments(parser: argparse.ArgumentParser, default: str = "local") -> None:
    """Which backend turns prompts into tokens (titans_lsp.backends); --model stays the model spec
    (the weights for local, the GGUF a started llama-server loads, the tokenizer everywhere)."""
    from titans_lsp.backends.config import BACKEND_NAMES, DECODE_CHOICES, DEFAULT_KEY_ENV

    group = parser.add_argument_group("backend")
    group.add_argument("--backend", default=default, choices=BACKEND_NAMES,
                       help=f"(default: {default}) local: the model in this process (the only one for memory modes); llamacpp: llama.cpp's "
                            "llama-server (started here with the model's GGUF, or at --backend-url); openai: an "
                            "OpenAI-compatible /v1/completions server at --backend-url (vLLM, SGLang, Ollama, ...); auto: llamacpp for "
                            "none/concat when llama-server is provisioned, local for memory modes and otherwise "
                            "(the choice is logged and in status)")
    group.add_argument("--backend-url", default=None, help="URL of a running server (openai: required; llamacpp: instead of starting one)")
    group.add_argument("--backend-model", default=None, help="openai: the served model's name (default: the server's first model)")
    group.add_argument("--backend-api-key-env", default=DEFAULT_KEY_ENV,
                       help=f"environment variable holding the API key (default {DEFAULT_KEY_ENV}; never logged)")
    group.add_argument("--backend-threads", type=int, default=None, help="llamacpp: CPU threads of the started server (default: all cores)")
    group.add_argument("--backend-parallel", type=int, default=1, help="llamacpp: requests the started server decodes together")
    group.add_argument("--backend-timeout", type=float, default=60.0, help="seconds to wait for a connection or the next token")
    group.add_argument("--llama-server", default=None, help="llama-server executable (default: scripts/provision-llamacpp's build, or PATH)")
    group.add_argument("--decode", default="eager", choices=DECODE_CHOICES,
                       help="local: eager, the dynamic-cache loop (default); graph, a static cache with the decode step "
                            "captured as a CUDA graph (a CPU runs the same static path without graphs); compile, "
                            "torch.compile(mode='reduce-overhead')")


def backend_config(args: argparse.Namespace):
    """The BackendConfig the flags describe (a UserError naming the bad flag)."""
    from titans_lsp.backends.config import BackendConfig
    from titans_lsp.cli import UserError

    try:
        return BackendConfig(name=args.backend, url=args.backend_url, model=args.backend_model,
                             api_key_env=args.backend_api_key_env, threads=args.backend_threads,
                             parallel=args.backend_parallel, timeout_s=args.backend_timeout, binary=args.llama_server,
                             decode=args.decode)
    except ValueError as exc:
        raise UserError(str(exc)) from None
