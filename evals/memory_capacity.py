"""Module-level positive control for the Titans memory: capacity and retention curves.

Capacity: write N random unit key -> value pairs (in blocks of ``--block`` pairs per update, ``--passes``
times over), then measure the relative recall error ||M(k) - v||^2 / ||v||^2 (1.0 = empty memory).
Retention: write a target set of pairs, then K further random pairs once each, and measure how
well the target set is still recalled as K grows. Both update rules, same settings as the model uses.

    python -m titans_lsp.evals.memory_capacity --out evals/results/<date>-memory-capacity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from titans_lsp.model.memory import MemoryConfig, init_memory_weights, recall_error, sgd_update, titans_update


def random_pairs(n: int, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    keys = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    values = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    return keys, values


class Writer:
    """Holds one memory (weights + momentum) and writes blocks of pairs with the chosen rule."""

    def __init__(self, config: MemoryConfig, generator: torch.Generator):
        self.config = config
        self.weights = init_memory_weights(config.memory_dim, config.depth, generator)
        self.momentum = [torch.zeros_like(w) for w in self.weights]

    def write(self, keys: torch.Tensor, values: torch.Tensor, block: int) -> None:
        c = self.config
        for start in range(0, keys.shape[0], block):
            k, v = keys[start:start + block], values[start:start + block]
            if c.update_rule == "sgd":
                self.weights, _ = sgd_update(self.weights, k, v, c.lr, c.max_update_norm)
            else:
                n = k.shape[0]
                theta = torch.full((n,), c.lr)
                eta = torch.full((n,), c.momentum_init)
                alpha = torch.full((n,), c.decay_init)
                self.weights, self.momentum, _ = titans_update(self.weights, self.momentum, k, v, theta, eta, alpha,
                                                               c.chunk_size, c.max_update_norm)


def capacity(config: MemoryConfig, sizes: list[int], passes: int, block: int, seed: int) -> list[float]:
    errors = []
    for n in sizes:
        g = torch.Generator().manual_seed(seed)
        writer = Writer(config, g)
        keys, values = random_pairs(n, config.memory_dim, g)
        for _ in range(passes):
            writer.write(keys, values, block)
        errors.append(recall_error(writer.weights, keys, values))
    return errors


def retention(config: MemoryConfig, target: int, later: list[int], passes: int, block: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    writer = Writer(config, g)
    keys, values = random_pairs(target, config.memory_dim, g)
    for _ in range(passes):
        writer.write(keys, values, block)
    errors, written = [], 0
    for k_total in later:
        extra_k, extra_v = random_pairs(k_total - written, config.memory_dim, g)
        writer.write(extra_k, extra_v, block)
        written = k_total
        errors.append(recall_error(writer.weights, keys, values))
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory (PNG + JSON)")
    parser.add_argument("--memory-dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--block", type=int, default=64, help="pairs per update (one forward pass of priming)")
    parser.add_argument("--passes", type=int, nargs="+", default=[1, 5], help="how often each pair set is written")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--target", type=int, default=64, help="retention: size of the remembered set")
    parser.add_argument("--later", type=int, nargs="+", default=[0, 64, 256, 1024, 4096, 16384])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "capacity": {}, "retention": {}}
    fig, (ax_cap, ax_ret) = plt.subplots(1, 2, figsize=(10, 4))
    for rule in ("sgd", "titans"):
        config = MemoryConfig(memory_dim=args.memory_dim, depth=args.depth, update_rule=rule)
        for passes in args.passes:
            errs = capacity(config, args.sizes, passes, args.block, args.seed)
            results["capacity"][f"{rule}/passes={passes}"] = dict(zip(args.sizes, errs))
            ax_cap.plot(args.sizes, errs, marker="o", label=f"{rule}, {passes} pass{'es' if passes > 1 else ''}")
            print(f"capacity {rule} passes={passes}: " + ", ".join(f"N={n}: {e:.3f}" for n, e in zip(args.sizes, errs)))
        errs = retention(config, args.target, args.later, max(args.passes), args.block, args.seed)
        results["retention"][rule] = dict(zip(args.later, errs))
        ax_ret.plot([max(k, 1) for k in args.later], errs, marker="o", label=rule)
        print(f"retention {rule}: " + ", ".join(f"K={k}: {e:.3f}" for k, e in zip(args.later, errs)))
    ax_cap.set(xscale="log", xlabel="pairs written (N)", ylabel="relative recall error", ylim=(0, 1.1),
               title=f"capacity (memory_dim {args.memory_dim}, depth {args.depth})")
    ax_ret.set(xscale="log", xlabel="pairs written afterwards (K; 0 shown at 1)", ylabel="recall error of first set",
               ylim=(0, 1.1), title=f"retention of {args.target} pairs ({max(args.passes)} passes)")
    for ax in (ax_cap, ax_ret):
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "memory_capacity.png", dpi=80)
    (args.out / "memory_capacity.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'memory_capacity.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
