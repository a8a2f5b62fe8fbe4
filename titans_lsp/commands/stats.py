"""`titans-lsp stats`: acceptance of the completions shown, from the local event store."""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import datetime
from pathlib import Path

HELP = "acceptance of shown completions per mode / language / workspace, from the local event store"
DESCRIPTION = """Reads the events the server recorded (titansLsp.telemetry; a SQLite file in the cache,
never sent anywhere) and prints, per group: items shown and decided (accepted or dismissed),
the acceptance rate with its Wilson 95 % interval, accepted characters per hour of editing
(pauses over 5 minutes left out) and latency percentiles of shown vs accepted items.
--experiment compares the arms of titansLsp.experiment (difference in acceptance, 95 % CI
stratified by file) and says when there are too few events for a conclusion."""

UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from titans_lsp.stats import GROUPS

    parser.add_argument("--since", default=None,
                        help="only events this recent: 30m, 12h, 7d, 2w, or a date (2026-12-01); default: all")
    parser.add_argument("--by", default="mode", choices=GROUPS, help="group by (default: mode)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--plot", default=None, metavar="OUT.png", help="also draw acceptance (with CIs) per group")
    parser.add_argument("--experiment", action="store_true", help="compare the arms of titansLsp.experiment")
    parser.add_argument("--db", default=None, help="the event store (default: <cache>/telemetry/events.sqlite3)")
    parser.add_argument("--cache-dir", default=None, help="the titans-lsp cache whose event store to read")


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """Unix seconds from ``7d`` / ``12h`` / ``30m`` / ``2w`` (that long ago) or an ISO date."""
    if text is None:
        return None
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a duration (30m, 12h, 7d, 2w) or a date (2026-12-01)") from None


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: dict) -> str:
    header = (f"{report['by']:<24} {'shown':>6} {'decided':>7} {'accepted':>8} {'rate':>7} {'95% CI':>15} "
              f"{'chars/h':>8} {'shown p50/p90 ms':>17} {'accepted p50/p90 ms':>20}")
    lines = [header, "-" * len(header)]
    rows = list(report["groups"].items()) + [("(all)", report["overall"])]
    for name, g in rows:
        low, high = g["ci95"]
        ci = "-" if low is None else f"{100 * low:.1f}-{100 * high:.1f}%"
        shown, accepted = g["latency_ms"]["shown"], g["latency_ms"]["accepted"]
        lines.append(f"{name[-24:]:<24} {g['shown']:>6} {g['decided']:>7} {g['accepted']:>8} {_pct(g['rate']):>7} "
                     f"{ci:>15} {_num(g['accepted_chars_per_hour']):>8} "
                     f"{_num(shown['p50']) + ' / ' + _num(shown['p90']):>17} "
                     f"{_num(accepted['p50']) + ' / ' + _num(accepted['p90']):>20}")
    for experiment in report.get("experiments", []):
        lines.append("")
        lines.append(f"experiment {experiment['experiment']}:")
        for arm, g in experiment["arms"].items():
            lines.append(f"  {arm:<10} decided {g['decided']:>5}, accepted {g['accepted']:>5} ({_pct(g['rate'])})")
        for c in experiment["comparisons"]:
            low, high = c["ci95"]
            diff = "-" if c["difference"] is None else f"{100 * c['difference']:+.1f} points"
            ci = "" if low is None else f" (95% CI {100 * low:+.1f} to {100 * high:+.1f}, {c['method']}, {c['strata']} files)"
            lines.append(f"  {c['arm']} - {c['reference']}: {diff}{ci}")
            lines.append(f"  -> {c['conclusion']}")
    if "experiments" in report and not report["experiments"]:
        lines.append("")
        lines.append("no experiment events (titansLsp.experiment was not set while these events were recorded)")
    return "\n".join(lines)


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["groups"])
    rates = [report["groups"][n]["rate"] or 0.0 for n in names]
    lows = [report["groups"][n]["ci95"][0] for n in names]
    highs = [report["groups"][n]["ci95"][1] for n in names]
    errors = [[r - (lo if lo is not None else r) for r, lo in zip(rates, lows)],
              [(hi if hi is not None else r) - r for r, hi in zip(rates, highs)]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 3.5))
    ax.bar(names, rates, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_ylabel("acceptance rate (Wilson 95% CI)")
    ax.set_xlabel(report["by"])
    ax.set_ylim(0, 1)
    for i, name in enumerate(names):
        ax.text(i, 0.02, f"n={report['groups'][name]['decided']}", ha="center", fontsize=8, color="white")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from titans_lsp.cli import UserError
    from titans_lsp.stats import acceptance_report
    from titans_lsp.telemetry import SchemaError, default_path, read_events

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    path = Path(args.db).expanduser() if args.db else default_path(args.cache_dir)
    try:
        events = read_events(path, since)
    except FileNotFoundError:
        raise UserError(f"no event store at {path}: no completion was recorded yet (titansLsp.telemetry.enabled)") from None
    except SchemaError as exc:
        raise UserError(str(exc)) from None
    report = acceptance_report(events, by=args.by, experiment=args.experiment)
    report["db"] = str(path)
    report["since"] = args.since
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{path}: {len(events)} events" + (f" since {args.since}" if args.since else ""))
        print(format_table(report))
    if args.plot:
        try:
            plot(report, Path(args.plot))
        except OSError as exc:  # a file where its folder should be, a read-only place
            raise UserError(f"--plot {args.plot}: cannot write it ({exc.strerror}); choose a writable path") from None
        except ValueError as exc:  # matplotlib: an extension it cannot write
            raise UserError(f"--plot {args.plot}: {exc}") from None
        if not args.json:
            print(f"plot: {args.plot}")
    return 0
