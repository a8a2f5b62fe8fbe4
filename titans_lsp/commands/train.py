"""`titans-lsp train` (placeholder until its issue lands)."""

import argparse

from titans_lsp.commands import add_model_arguments, not_implemented

HELP = "train the Titans memory on repository-grouped code with the base model frozen"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return not_implemented("train")
