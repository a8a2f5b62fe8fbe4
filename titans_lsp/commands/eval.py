"""`titans-lsp eval` (placeholder until its issue lands)."""

import argparse

from titans_lsp.commands import add_model_arguments, not_implemented

HELP = "reproduce the CrossCodeEval tables (EM, edit similarity) for every mode; `eval build` makes datasets"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return not_implemented("eval")
