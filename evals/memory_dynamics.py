"""Memory over a long priming run: per-layer state norms, update norms, gates and read size.

The study's reviewers asked how the memory behaves as a workspace fills it: does it grow without
bound, saturate at the clip, or stay too small to matter? This primes one package's files (the
Primer's order: ``retrieval.workspace.priming_order``, 512-token chunks, a fresh memory) and every
``--every`` chunks logs, per memory layer:

- ``state_norm``: Frobenius norm of the memory (all matrices of the layer; ntp: B), ``delta_norm``:
  of its change from the initial weights, ``momentum_norm`` (titans);
- ``update_norm``: the last write's raw (pre-clip) update norm, ``clipped``: the share of writes since
  the last log whose raw norm exceeded ``max_update_norm`` (ntp clips all layers together);
- ``gate``: the read gate (learned, so constant without training; ntp has none: 1), and for the titans
  rule the mean per-token theta (step), eta (momentum) and alpha (forgetting) on the probe;
- ``read_ratio``: on a probe (the first ``--probe-tokens`` of a file that is never primed), the mean over
  tokens of ||gate * memory read|| / ||attention input|| (ntp: ||B A x|| / ||W x|| at the down-projection);
- ``nll_open`` / ``nll_shut``: the probe's next-token loss with the memory read and ablated.

Writes ``dynamics.csv`` (one row per variant, log point and layer), ``table.md`` and ``dynamics.png``.

    /work/bin/cpu-slot python -m titans_lsp.evals.memory_dynamics --model default --threads 1 \\
        --workspace ~/.cache/titans-lsp/packages/src/markitdown-0.1.9 --variants sgd titans ntp \\
        --out evals/results/2026-12-02-memory-variants/dynamics
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

FIELDS = ["variant", "chunks", "tokens", "layer", "state_norm", "delta_norm", "momentum_norm", "update_norm",
          "clipped", "gate", "theta", "eta", "alpha", "read_ratio", "nll_open", "nll_shut"]


def workspace_chunks(root: Path, tokenizer, chunk_tokens: int, probe_tokens: int) -> tuple[list[list[int]], list[int], str]:
    """(the chunks to prime, in the Primer's file order; the probe's token ids; the probe file's path).
    The probe is the last file in priming order with at least ``probe_tokens`` tokens; it is not primed."""
    from titans_lsp.retrieval.workspace import iter_workspace_files, priming_order

    files = [f for f in priming_order(iter_workspace_files(root, extensions=[".py"])) if f.text.strip()]
    if not files:
        raise SystemExit(f"no Python files under {root}")
    ids = [tokenizer(f.text, add_special_tokens=False)["input_ids"] for f in files]
    probe_at = max((i for i, t in enumerate(ids) if len(t) >= probe_tokens), default=None)
    if probe_at is None:
        raise SystemExit(f"no file under {root} has {probe_tokens} tokens for the probe")
    chunks = [t[o:o + chunk_tokens] for i, t in enumerate(ids) if i != probe_at for o in range(0, len(t), chunk_tokens)]
    return chunks, ids[probe_at][:probe_tokens], files[probe_at].rel


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum(t.float().pow(2).sum() for t in tensors)))


@torch.no_grad()
def probe(patch, state, probe_ids: torch.Tensor) -> dict:
    """Per-layer read size and titans rates on the probe, and its loss with the memory open and shut."""
    model = patch.model
    with patch.activate(state, gates="shut"):
        nll_shut = float(model(probe_ids, labels=probe_ids, use_cache=False).loss)
    per_layer: dict[int, dict] = {}
    if patch.is_ntp:
        inputs: dict[int, torch.Tensor] = {}
        from titans_lsp.model import ntp
        from titans_lsp.model.patching import decoder_layers

        layers = decoder_layers(model)
        handles = [ntp.down_projection(layers[i]).register_forward_hook(
            lambda m, a, o, i=i: inputs.__setitem__(i, a[0].detach())) for i in patch.layers]
        try:
            with patch.activate(state):
                nll_open = float(model(probe_ids, labels=probe_ids, use_cache=False).loss)
        finally:
            for h in handles:
                h.remove()
        for i in patch.layers:
            x = inputs[i].float()
            base = x @ ntp.down_projection(layers[i]).weight.float().t()
            delta = patch.memory[str(i)].delta(x, state.weights[i][0])
            per_layer[i] = {"read_ratio": float((delta.norm(dim=-1) / base.norm(dim=-1).clamp_min(1e-12)).mean())}
        return {"nll_open": nll_open, "nll_shut": nll_shut, "layers": per_layer}
    with patch.activate(state, write=True) as ctx:  # write=True only records each layer's attention input
        nll_open = float(model(probe_ids, labels=probe_ids, use_cache=False).loss)
    for i in patch.layers:
        mem, hidden = patch.memory[str(i)], ctx.pending[i].float()
        read = mem.read(hidden, state.weights[i])
        _, _, theta, eta, alpha = mem.write_inputs(hidden)
        per_layer[i] = {"read_ratio": float((read.norm(dim=-1) / hidden.norm(dim=-1).clamp_min(1e-12)).mean()),
                        "theta": float(theta.mean()), "eta": float(eta.mean()), "alpha": float(alpha.mean())}
    return {"nll_open": nll_open, "nll_shut": nll_shut, "layers": per_layer}


def run_variant(lm, name: str, config, chunks: list[list[int]], probe_ids: list[int], every: int) -> list[dict]:
    from titans_lsp.model.patching import install_memory

    patch = install_memory(lm.model, config)
    state = patch.new_state()
    gates = patch.gate_values()
    probe_t = torch.tensor([probe_ids], device=lm.device)
    rows: list[dict] = []
    clipped = {i: 0 for i in patch.layers}
    since = 0

    def log(done: int, tokens: int) -> None:
        nonlocal since
        found = probe(patch, state, probe_t)
        for i in patch.layers:
            at = found["layers"][i]
            rows.append({"variant": name, "chunks": done, "tokens": tokens, "layer": i,
                         "state_norm": _norm(state.weights[i]),
                         "delta_norm": _norm([w - w0 for w, w0 in zip(state.weights[i], state.initial[i])]),
                         "momentum_norm": _norm(state.momentum[i]),
                         "update_norm": state.last_update_norm.get(i, 0.0),
                         "clipped": clipped[i] / since if since else 0.0, "gate": gates[i],
                         "theta": at.get("theta", ""), "eta": at.get("eta", ""), "alpha": at.get("alpha", ""),
                         "read_ratio": at["read_ratio"], "nll_open": found["nll_open"], "nll_shut": found["nll_shut"]})
            clipped[i] = 0
        since = 0
        print(f"{name:7s} chunks {done:4d} tokens {tokens:6d}  probe nll open {found['nll_open']:.4f} "
              f"shut {found['nll_shut']:.4f}  |delta| " + " ".join(f"{rows[-len(patch.layers) + k]['delta_norm']:.2f}"
                                                                 for k in range(len(patch.layers))), flush=True)

    tokens = 0
    start = time.perf_counter()
    log(0, 0)
    try:
        for n, chunk in enumerate(chunks, 1):
            patch.write(state, torch.tensor([chunk], device=lm.device))
            tokens += len(chunk)
            since += 1
            for i in patch.layers:
                clipped[i] += state.last_update_norm.get(i, 0.0) > config.max_update_norm
            if n % every == 0 or n == len(chunks):
                log(n, tokens)
    finally:
        patch.uninstall()
    print(f"{name}: {len(chunks)} chunks, {tokens} tokens in {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def write_table(rows: list[dict], path: Path) -> None:
    """Per variant and layer: the first, middle and last log points."""
    lines = ["| variant | layer | tokens | delta norm | update norm (raw) | clipped | gate | read ratio | "
             "probe NLL open / shut |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        points = sorted({r["chunks"] for r in mine})
        picked = [points[0], points[len(points) // 2], points[-1]]
        for layer in sorted({r["layer"] for r in mine}):
            for p in dict.fromkeys(picked):
                r = next(r for r in mine if r["layer"] == layer and r["chunks"] == p)
                lines.append(f"| {variant} | {layer} | {r['tokens']} | {r['delta_norm']:.3f} | {r['update_norm']:.3f} | "
                             f"{r['clipped']:.2f} | {r['gate']:.3f} | {r['read_ratio']:.2e} | "
                             f"{r['nll_open']:.4f} / {r['nll_shut']:.4f} |")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(3, len(variants), figsize=(4.2 * len(variants), 9), squeeze=False)
    for col, variant in enumerate(variants):
        mine = [r for r in rows if r["variant"] == variant]
        for layer in sorted({r["layer"] for r in mine}):
            pts = [r for r in mine if r["layer"] == layer]
            axes[0][col].plot([r["tokens"] for r in pts], [r["delta_norm"] for r in pts], label=f"layer {layer}")
            axes[1][col].plot([r["tokens"] for r in pts], [r["read_ratio"] for r in pts], label=f"layer {layer}")
        pts = [r for r in mine if r["layer"] == mine[0]["layer"]]
        axes[2][col].plot([r["tokens"] for r in pts], [r["nll_open"] - r["nll_shut"] for r in pts])
        axes[0][col].set_title(variant)
        axes[0][col].set_ylabel("||W - W_0||")
        axes[1][col].set_ylabel("read / input (probe)")
        axes[1][col].set_yscale("log")
        axes[2][col].set_ylabel("probe NLL open - shut")
        axes[2][col].axhline(0, color="grey", lw=0.5)
        axes[2][col].set_xlabel("tokens primed")
        axes[0][col].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workspace", type=Path, required=True, help="the folder to prime (e.g. an unpacked package)")
    parser.add_argument("--variants", nargs="+", default=["sgd", "titans", "ntp"], help="update rules")
    parser.add_argument("--config", default="{}", help="JSON of MemoryConfig fields applied to every variant")
    parser.add_argument("--chunk-tokens", type=int, default=512)
    parser.add_argument("--probe-tokens", type=int, default=512)
    parser.add_argument("--every", type=int, default=10, help="log every N chunks")
    parser.add_argument("--max-chunks", type=int, default=0, help="prime at most N chunks (0: the whole workspace)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true", help="rebuild table.md and dynamics.png from dynamics.csv")
    args = parser.parse_args(argv)
    if args.every < 1 or args.chunk_tokens < 2 or args.probe_tokens < 2 or args.max_chunks < 0:
        parser.error("--every must be >= 1, --chunk-tokens and --probe-tokens >= 2, --max-chunks >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "dynamics.csv"
    if args.report_only:
        with csv_path.open() as f:
            rows = [{k: (float(v) if k not in ("variant",) and v != "" else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        from titans_lsp.model.loading import load_model
        from titans_lsp.model.memory import MemoryConfig

        extra = json.loads(args.config)
        configs = {v: MemoryConfig.from_dict({"update_rule": v, **extra}) for v in args.variants}  # validated up front
        lm = load_model(args.model, device=args.device)
        chunks, probe_ids, probe_rel = workspace_chunks(args.workspace.expanduser(), lm.tokenizer,
                                                        args.chunk_tokens, args.probe_tokens)
        if args.max_chunks:
            chunks = chunks[:args.max_chunks]
        print(f"{args.workspace}: {len(chunks)} chunks, {sum(map(len, chunks))} tokens; probe {probe_rel}", flush=True)
        rows = []
        for name, config in configs.items():
            rows += run_variant(lm, name, config, chunks, probe_ids, args.every)
            with csv_path.open("w", newline="") as f:  # after every variant, so a stopped run keeps what it did
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(rows)
        (args.out / "run.json").write_text(json.dumps({
            "model": lm.name, "workspace": str(args.workspace), "probe": probe_rel, "chunks": len(chunks),
            "tokens": sum(map(len, chunks)), "chunk_tokens": args.chunk_tokens, "every": args.every,
            "threads": torch.get_num_threads(), "configs": {k: c.to_dict() for k, c in configs.items()}}, indent=2))
    write_table(rows, args.out / "table.md")
    plot(rows, args.out / "dynamics.png")
    print(f"wrote {csv_path}, {args.out / 'table.md'}, {args.out / 'dynamics.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
