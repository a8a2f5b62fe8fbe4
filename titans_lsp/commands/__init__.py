"""Subcommands of the ``titans-lsp`` CLI (see ``titans_lsp.cli``)."""

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags every model-using command shares."""
    parser.add_argument("--model", default="default",
                        help="'default' (embedded SmolLM2-135M), a Hugging Face model directory, a .gguf file, or a hub id")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--cache-dir", default=None,
                        help="cache for converted models and workspace state (default: $XDG_CACHE_HOME/titans-lsp or ~/.cache/titans-lsp)")


def add_decode_argument(parser: argparse.ArgumentParser) -> None:
    """How completions decode (titans_lsp.engine.DECODE_CHOICES, which validates the value)."""
    parser.add_argument("--decode", default="eager", metavar="{eager,graph,compile}",
                        help="eager: the dynamic-cache loop (default); graph: a static cache with the decode step "
                             "captured as a CUDA graph (a CPU runs the same static path without graphs); "
                             "compile: torch.compile(mode='reduce-overhead')")

