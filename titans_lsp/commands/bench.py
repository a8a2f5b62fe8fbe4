"""`titans-lsp bench` (placeholder until its issue lands)."""

import argparse

from titans_lsp.commands import add_model_arguments, not_implemented

HELP = "replay a typing trace through the server and report completion latency per mode"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return not_implemented("bench")
