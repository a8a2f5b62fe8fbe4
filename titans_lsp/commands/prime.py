"""`titans-lsp prime` (placeholder until its issue lands)."""

import argparse

from titans_lsp.commands import add_model_arguments, not_implemented

HELP = "index a workspace and prime its memory ahead of time (what the server does on open)"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return not_implemented("prime")
