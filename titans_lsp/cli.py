"""The ``titans-lsp`` console script: one subcommand per module in ``titans_lsp/commands``.

Each command module defines ``HELP`` (one line), ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int``. Modules import heavy libraries (torch, transformers) inside
``run`` only, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from titans_lsp import __version__

COMMANDS = ("serve", "eval", "train", "prime", "bench", "doctor", "stats")


class UserError(RuntimeError):
    """Bad input from the user: printed as one line, exit status 1, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="titans-lsp",
        description="Code completion over LSP with Titans test-time memory and cross-file retrieval.",
    )
    parser.add_argument("--version", action="version", version=f"titans-lsp {__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="logging verbosity on stderr (default: warning)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"titans_lsp.commands.{name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    from titans_lsp.backends.base import BackendError
    from titans_lsp.model.loading import ModelLoadError

    try:
        return int(args._module.run(args) or 0)
    except (UserError, ModelLoadError, BackendError) as exc:  # each says what failed and the fix in one line
        print(f"titans-lsp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"titans-lsp {args.command}: interrupted", file=sys.stderr)
        return 130
