"""`titans-lsp serve` (placeholder until its issue lands)."""

import argparse

from titans_lsp.commands import add_model_arguments, not_implemented

HELP = "run the language server (stdio, or --tcp HOST:PORT) for editors"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return not_implemented("serve")
