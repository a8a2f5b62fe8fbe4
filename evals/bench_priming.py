"""Priming throughput against a plain forward pass over the same tokens, in the same run.

    python -m titans_lsp.evals.bench_priming --model default --tokens 2048 --chunk-tokens 512

"forward" is the unpatched model's full forward (logits included) over each chunk; "prime" is
``patch.prime`` over the same chunks (forward up to the last memory layer + memory updates; for the
``ntp`` rule, ``ntp_steps`` full forwards with a backward to the delta each).
Repeats alternate the two so machine load hits both alike; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SAMPLE = Path(__file__).resolve().parents[1] / "model" / "patching.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--chunk-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rules", nargs="+", default=["sgd", "titans"])
    parser.add_argument("--integrations", nargs="+", default=["additive"], help="additive, mag, mal, mac")
    parser.add_argument("--memory-dim", type=int, default=512)
    parser.add_argument("--config", default="{}", help="JSON of more MemoryConfig fields, e.g. '{\"ntp_steps\": 2}'")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    model, tok = lm.model, lm.tokenizer
    text = SAMPLE.read_text()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    while len(ids) < args.tokens:
        ids = ids + ids
    ids = ids[:args.tokens]
    chunks = [torch.tensor([ids[i:i + args.chunk_tokens]], device=lm.device) for i in range(0, len(ids), args.chunk_tokens)]

    def sync() -> None:
        if lm.device.type == "cuda":
            torch.cuda.synchronize()

    def run_forward() -> float:
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            for chunk in chunks:
                model(chunk, use_cache=False)
        sync()
        return time.perf_counter() - start

    results = {"model": lm.name, "device": str(lm.device), "dtype": str(lm.dtype), "tokens": len(ids),
               "chunk_tokens": args.chunk_tokens, "threads": torch.get_num_threads(), "rules": {}}
    for rule, integration in [(r, i) for i in args.integrations for r in args.rules]:
        name = rule if integration == "additive" else f"{rule}+{integration}"
        extra = json.loads(args.config)
        name += f" {json.dumps(extra)}" if extra and rule == "ntp" else ""
        patch = install_memory(model, MemoryConfig(**{"memory_dim": args.memory_dim, "update_rule": rule,
                                                      "integration": integration, **extra}))
        state = patch.new_state()
        patch.prime(state, [ids[:args.chunk_tokens]])  # warm-up (first autograd call, allocations)
        run_forward()
        forward_s, prime_s, update_s = [], [], []
        for _ in range(args.repeats):
            forward_s.append(run_forward())
            state.reset()
            sync()
            start = time.perf_counter()
            stats = patch.prime(state, [ids], chunk_tokens=args.chunk_tokens)
            sync()
            prime_s.append(time.perf_counter() - start)
            update_s.append(stats.update_seconds)
        fwd, prm = statistics.median(forward_s), statistics.median(prime_s)
        results["rules"][name] = {"layers": patch.layers, "forward_s": forward_s, "prime_s": prime_s, "update_s": update_s,
                                  "forward_tok_s": len(ids) / fwd, "prime_tok_s": len(ids) / prm, "ratio": prm / fwd}
        print(f"{name:12s} layers={patch.layers} forward {fwd:.3f}s ({len(ids) / fwd:.0f} tok/s)  "
              f"prime {prm:.3f}s ({len(ids) / prm:.0f} tok/s)  prime/forward = {prm / fwd:.2f}x  "
              f"(memory updates {statistics.median(update_s):.3f}s = {statistics.median(update_s) / fwd:.2f}x forward)")
        patch.uninstall()
    print(f"model={lm.name} device={lm.device} dtype={lm.dtype} tokens={len(ids)} chunk={args.chunk_tokens} "
          f"threads={torch.get_num_threads()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
