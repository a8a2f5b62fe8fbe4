"""`titans-lsp serve`: the language server for editors (stdio by default, or TCP)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from titans_lsp.commands import (add_backend_arguments, add_memory_config_argument, add_model_arguments, backend_config,
                               memory_checkpoint_from, memory_config_from)

HELP = "run the language server (stdio, or --tcp HOST:PORT) for editors"
DESCRIPTION = """Run the titans-lsp language server.

Editors start it as `titans-lsp serve --stdio` (the default transport). With --tcp HOST:PORT it
listens on a socket instead, which is handy for watching its log while an editor connects.
Per-folder settings come from the editor (section `titansLsp`: mode, retriever, maxNewTokens,
contextBudget, multiline, fim); initializationOptions {model, device, dtype, backend, backendUrl,
backendModel, backendApiKeyEnv, backendThreads} override the flags below."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    transport.add_argument("--tcp", metavar="HOST:PORT",
                           help="listen for one editor on a TCP socket instead (HOST defaults to 127.0.0.1; any "
                                "non-loopback HOST requires --auth-token-file)")
    parser.add_argument("--auth-token-file", metavar="PATH", default=None,
                        help="with --tcp: a file holding a token (16+ characters) the editor must send in "
                             "initialize's initializationOptions.authToken; required for a non-loopback address")
    add_model_arguments(parser)
    from titans_lsp.backends.config import SERVE_DEFAULT_BACKEND

    add_backend_arguments(parser, default=SERVE_DEFAULT_BACKEND)
    parser.add_argument("--memory-checkpoint", default=None,
                        help="directory with trained memory parameters (titans-lsp train); default: untrained memory")
    add_memory_config_argument(parser)
    parser.add_argument("--memory-device-mb", type=float, default=None, metavar="MB",
                        help="keep at most this much of the workspaces' memory states on the model's device, most "
                             "recently used first; the rest wait in host memory (default: no limit)")
    parser.add_argument("--memory-host-mb", type=float, default=None, metavar="MB",
                        help="past --memory-device-mb, at most this much in host memory; the rest is spilled to "
                             "<cache>/memory-spill (default: no limit)")
    # dest differs from the global --log-level so the subcommand's default cannot override the global flag
    parser.add_argument("--log-level", dest="serve_log_level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="what goes to the log file and the editor's log (default: info)")
    parser.add_argument("--log-file", default=None,
                        help="log file (default: serve.log in the cache directory); '-' for none")
    parser.add_argument("--events-db", default=None, metavar="PATH",
                        help="the local event store of shown/accepted/dismissed completions (titansLsp.telemetry; "
                             "default: <cache>/telemetry/events.sqlite3); read it with `titans-lsp stats --db PATH`")


def parse_host_port(value: str) -> tuple[str, int]:
    from titans_lsp.cli import UserError

    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--tcp expects HOST:PORT, e.g. 127.0.0.1:2087, got {value!r}")
    return host or "127.0.0.1", int(port)


def setup_logging(level_name: str, log_file: str | None, cache_dir: str | None) -> str | None:
    """Log to a file (the editor gets window/logMessage through the server's own handler)."""
    from titans_lsp.paths import cache_root

    level = getattr(logging, level_name.upper())
    logger = logging.getLogger("titans_lsp")
    logger.setLevel(level)
    if log_file == "-":
        return None
    from titans_lsp.cli import UserError

    path = cache_root(cache_dir) / "serve.log" if log_file is None else Path(log_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:  # a read-only cache, a file where the folder should be
        raise UserError(f"--log-file {path}: cannot write it ({exc.strerror}); choose a writable path, "
                        "or --log-file - for no log file") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    logger.addHandler(handler)
    return str(path)


def run(args: argparse.Namespace) -> int:
    from titans_lsp.cli import UserError

    level_name = args.serve_log_level or ("info" if args.log_level == "warning" else args.log_level)
    backend = backend_config(args)
    for flag, value in (("--memory-device-mb", args.memory_device_mb), ("--memory-host-mb", args.memory_host_mb)):
        if value is not None and not value >= 0:
            raise UserError(f"{flag} must be a number of megabytes >= 0, got {value}")
    memory_checkpoint_from(args.memory_checkpoint)
    log_path = setup_logging(level_name, args.log_file, args.cache_dir)
    from titans_lsp.server import build_server

    server = build_server(model=args.model, device=args.device, dtype=args.dtype, cache_dir=args.cache_dir,
                          memory_checkpoint=args.memory_checkpoint, backend=backend, log_level=getattr(logging, level_name.upper()),
                          memory_budget_mb=(args.memory_device_mb, args.memory_host_mb), events_db=args.events_db,
                          memory_config=memory_config_from(args.memory_config))
    log = logging.getLogger("titans_lsp.serve")
    from titans_lsp import transport

    if args.auth_token_file and not args.tcp:
        raise UserError("--auth-token-file only applies to --tcp (stdio has no other clients)")
    import signal

    # A SIGTERM (an editor or system stopping us without shutdown/exit) ends like a lost client:
    # background work stops between chunks and priming saves what it wrote.
    signal.signal(signal.SIGTERM, lambda *_: finish(server, transport.lost_client_code(server.protocol), log))
    if args.tcp:
        host, port = parse_host_port(args.tcp)
        if args.auth_token_file:
            try:
                server.auth_token = transport.read_token(args.auth_token_file)
            except (OSError, ValueError) as exc:
                raise UserError(f"--auth-token-file: {exc}") from None
        elif not transport.is_loopback(host):
            raise UserError(f"refusing to listen on {host}: anyone who can reach it could read files through the "
                            f"completions; pass --auth-token-file, or keep 127.0.0.1 and use an SSH tunnel")
        if not transport.is_loopback(host):
            warning = (f"WARNING: titans-lsp listens on {host}:{port}, reachable from other machines; only a client "
                       f"sending the token from {args.auth_token_file} is served, and the traffic is NOT encrypted "
                       f"(prefer 127.0.0.1 with an SSH tunnel)")
            print(f"titans-lsp: {warning}", file=sys.stderr, flush=True)
            log.warning(warning)

        def listening(bound_host: str, bound_port: int) -> None:
            token = ", init_options = { authToken = <token> }" if server.auth_token else ""
            print(f"titans-lsp: listening on {bound_host}:{bound_port} (log: {log_path or 'none'})\n"
                  f"  backend: {_backend_plan(backend, args.model)}\n"
                  f"  VS Code: install editors/vscode (npm ci && npm run package), then set\n"
                  f"           \"titansLsp.serverAddress\": \"{bound_host}:{bound_port}\" to use this server (without it the "
                  f"extension starts its own)" + ("; and titansLsp.authTokenFile" if server.auth_token else "") + "\n"
                  f"  Neovim:  vim.lsp.config('titans', {{ cmd = vim.lsp.rpc.connect('{bound_host}', {bound_port}){token} }})",
                  file=sys.stderr, flush=True)
            log.info("serving on tcp %s:%d%s", bound_host, bound_port, " (token required)" if server.auth_token else "")

        code = transport.serve_tcp(server, host, port, on_listening=listening)
    else:
        log.info("serving on stdio; backend: %s", _backend_plan(backend, args.model))
        code = transport.serve_stdio(server)
    return finish(server, code, log)


def _backend_plan(config, model: str) -> str:
    """One line on what will run the model (for auto: whether llama-server was found, before loading)."""
    if config.name != "auto":
        return config.name
    from titans_lsp.backends.auto import planned_serving

    return f"auto: {planned_serving(config, model)}"


def finish(server, code: int, log: logging.Logger) -> int:
    """Stop background work within a bounded time (priming saves what it wrote), then end the
    process without running interpreter teardown: a native thread still inside torch when the
    interpreter finalizes aborts it (SIGABRT)."""
    import os

    stopped = server.stop_all(timeout=STOP_TIMEOUT_S)
    log.info("exiting with code %d (%s)", code,
             "background work stopped" if stopped else f"background work still running after {STOP_TIMEOUT_S:.0f} s")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


STOP_TIMEOUT_S = 15.0
