"""GPU latency script for a machine with an accelerator: Qwen3.5-9B shape, random bf16 weights.

Speed does not depend on weight values, so a random-weight model built from the default
``Qwen3_5TextConfig`` (the 9B shape) measures the true cost. Per mode: time to first token and
per-token latency for ``--prompt-tokens``-token prompts, cold (fresh cache) and warm (one
keystroke later on the same document: DeltaNet states restored from the line-start snapshot,
attention KV cropped); memory overhead of the Titans memory modules; priming tokens/s.
Everything goes through the same decoding loop the server uses (greedy_generate).

    python -m titans_lsp.evals.gpu_bench --out gpu.json          # on the GPU machine
    python -m titans_lsp.evals.gpu_bench --tiny --out tiny.json  # same code path, tiny config, CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from titans_lsp.model.generation import PrefixCache, greedy_generate


NEWLINE_ID = 2


class IdTokenizer:
    """Stand-in tokenizer over raw ids: the loop only needs decode() and eos (no real vocab here).
    ``newline_id`` decodes to a line break, so the line-start snapshot rule applies."""

    eos_token_id = 0

    def __init__(self, newline_id: int = 2):
        self.newline_id = newline_id

    def decode(self, ids) -> str:
        return "".join("\n" if i == self.newline_id else f"<{i}>" for i in ids)


def build_model(tiny: bool, device: str, dtype: torch.dtype):
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    if tiny:
        config = Qwen3_5TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_num_value_heads=4,
                                   linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
                                   max_position_embeddings=8192, eos_token_id=0, pad_token_id=0, bos_token_id=1)
    else:
        config = Qwen3_5TextConfig(eos_token_id=0, pad_token_id=0)  # the default config is the 9B shape
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3_5ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _allocated(device: str) -> int:
    return torch.cuda.memory_allocated() if device.startswith("cuda") else 0


def time_generation(model, prompt: list[int], new_tokens: int, device: str, cache: PrefixCache | None = None) -> dict:
    """TTFT (prefill + first token) and per-token decode latency of one greedy call."""
    _sync(device)
    start = time.perf_counter()
    result = greedy_generate(model, IdTokenizer(NEWLINE_ID), prompt, new_tokens, cache=cache, cache_key="bench", lookahead=0,
                             stop=None)
    _sync(device)
    total = time.perf_counter() - start
    per_token = result.decode_s / result.decoded if result.decoded else None
    return {"ttft_ms": round(result.prefill_s * 1000.0, 2), "per_token_ms": round(per_token * 1000.0, 2) if per_token else None,
            "total_ms": round(total * 1000.0, 2), "prefilled": result.prefilled, "reused": result.reused,
            "decoded": result.decoded}


def _median_runs(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float)) and runs[0][k] is not None]
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}


def _line_prompt(vocab: int, tokens: int, newline_id: int, seed: int) -> list[int]:
    """Random ids with a 'newline' token every ~12 tokens, so the line-start snapshot applies."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (tokens,), generator=g).tolist()
    for i in range(11, tokens, 12):
        ids[i] = newline_id
    return ids


def run(args: argparse.Namespace) -> dict:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    before = _allocated(device)
    model = build_model(args.tiny, device, dtype)
    weights_bytes = _allocated(device) - before
    vocab = model.config.vocab_size
    newline_id = NEWLINE_ID

    results: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                     "config": "tiny" if args.tiny else "Qwen3_5TextConfig() (9B shape)", "dtype": str(dtype),
                     "parameters": sum(p.numel() for p in model.parameters()), "weights_bytes": weights_bytes,
                     "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "modes": {}, "notes": []}

    patch = state = None
    try:
        from titans_lsp.model.memory import MemoryConfig
        from titans_lsp.model.patching import install_memory
    except ImportError:
        results["notes"].append("memory modes skipped: titans_lsp.model.patching is not in this build")
    else:
        before = _allocated(device)
        patch = install_memory(model, MemoryConfig())
        state = patch.new_state()
        results["memory_overhead_bytes"] = _allocated(device) - before
        results["memory_parameters"] = sum(p.numel() for p in patch.trainable_parameters())
        # Device-independent size: the memory modules' own tensors (the fp32 state is the same order).
        results["memory_module_bytes"] = sum(t.numel() * t.element_size() for t in patch.memory.parameters())

    modes = ["none"] + (["memory", "ablation"] if patch is not None else [])
    for mode in modes:
        context = patch.activate(state, gates="shut" if mode == "ablation" else "open") if mode != "none" else _Null()
        cold_runs, warm_runs = [], []
        with context, torch.no_grad():
            time_generation(model, _line_prompt(vocab, 32, newline_id, 99), 2, device)  # warm-up (kernels, allocator)
            for repeat in range(args.repeats):
                prompt = _line_prompt(vocab, args.prompt_tokens, newline_id, repeat)
                cache = PrefixCache()
                cold_runs.append(time_generation(model, prompt, args.new_tokens, device, cache=cache))
                # One keystroke later: the last token changes and one more is typed.
                typed = prompt[:-1] + [(prompt[-1] + 1) % vocab or 3, 5]
                warm_runs.append(time_generation(model, typed, args.new_tokens, device, cache=cache))
        results["modes"][mode] = {"cold": _median_runs(cold_runs), "warm": _median_runs(warm_runs)}

    if patch is not None:
        ids = _line_prompt(vocab, args.priming_tokens, newline_id, 7)
        _sync(device)
        start = time.perf_counter()
        stats = patch.prime(state, [ids], chunk_tokens=512)
        _sync(device)
        results["priming_tokens_per_s"] = round(stats.tokens / (time.perf_counter() - start), 1)
    if device.startswith("cuda"):
        results["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return results


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny Qwen3.5 config (CPU): exercises the same code path")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--priming-tokens", type=int, default=4096)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
