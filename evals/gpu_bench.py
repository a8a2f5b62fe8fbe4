"""GPU latency script for a machine with an accelerator: Qwen3.5-9B shape, random bf16 weights.

Speed does not depend on weight values, so a random-weight model built from the default
``Qwen3_5TextConfig`` (the 9B shape) measures the true cost. Per mode: time to first token and
per-token latency for ``--prompt-tokens``-token prompts, cold (fresh cache) and warm (one
keystroke later on the same document: DeltaNet states restored from the line-start snapshot,
attention KV cropped); memory overhead of the Titans memory modules; priming tokens/s.
Everything goes through the same decoding loop the server uses (greedy_generate).

With ``--train-steps N``: seconds per memory-training step (frozen bf16 base, gradient checkpointing,
model/training.py's loss / freeze / optimizer groups / priming) for files of ``--train-seq-lens``
tokens, peak GPU memory, trainable parameters, and the hours 10,000 such steps take.
``--checkpointing both`` also times the steps without checkpointing (as ``training.train`` runs today).
``--integrations additive,mac`` repeats the memory measurements per MemoryConfig integration.
Each section is guarded: an error is recorded under ``errors`` and the run goes on.

    python -m titans_lsp.evals.gpu_bench --train-steps 3 --out gpu.json   # on the GPU machine
    python -m titans_lsp.evals.gpu_bench --tiny --train-steps 2 --train-seq-lens 64,128 --out tiny.json  # CPU
    scripts/gpu-check   # the prepared device run (installs, versions, nvidia-smi, this bench)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from titans_lsp.model.generation import PrefixCache, greedy_generate
from titans_lsp.modes import Mode

# the latency modes this bench times: the base model and the patched one with gates open / shut
LATENCY_MODES = (Mode.NONE.value, Mode.MEMORY.value, Mode.ABLATION.value)


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
    if cache is not None and cache.past is not None and cache.past.get_seq_length() != len(cache.ids):
        # transformers < 5.24 takes the cache as past_key_values and silently ignores generation.py's cache=
        raise RuntimeError(f"the model did not fill the cache ({cache.past.get_seq_length()} of {len(cache.ids)} tokens): "
                           "this transformers ignores the cache= argument; install transformers>=5.24")
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


def time_training(model, patch, seq_lens: list[int], steps: int, warmup: int, device: str,
                  checkpointing: bool = True, label: str = "") -> dict:
    """Seconds per memory-training step at each sequence length, with model/training.py's own pieces.

    One step is what ``training.train`` does per file: the next-token loss on a ``seq_len``-token file
    with the memory primed by the previous file (``file_loss``), backward into the trainable memory
    parameters only (``freeze_base``), gradient clip, AdamW step (``param_groups``), then priming that
    file (``prime_file``, first order). Random token ids stand in for the study's StarCoderData files:
    speed does not depend on the values. The base is frozen in its load dtype (bf16 on a GPU)."""
    from titans_lsp.model.training import TrainConfig, file_loss, freeze_base, param_groups, prime_file

    config = TrainConfig()
    params = freeze_base(model, patch)
    optimizer = torch.optim.AdamW(param_groups(params, config.lr, config.gate_lr_scale), weight_decay=config.weight_decay)
    vocab = model.config.vocab_size
    result: dict = {"trainable_parameters": sum(p.numel() for p in params), "gradient_checkpointing": checkpointing,
                    "chunk_tokens": config.chunk_tokens, "timed_steps": steps, "warmup_steps": warmup, "seq_lens": {}}
    if checkpointing:
        _set_checkpointing(model, True)
        result["gradient_checkpointing"] = _is_checkpointing(model)
    initial = [p.detach().clone() for p in params]
    model.train()  # checkpointing only acts in training mode; Qwen3.5 has no dropout
    try:
        for seq_len in seq_lens:
            files = [_line_prompt(vocab, seq_len, NEWLINE_ID, 1000 + i) for i in range(warmup + steps + 1)]
            state = patch.new_state()
            prime_file(patch, state, files[0], None, config.chunk_tokens, differentiable=False)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            step_s, prime_s = [], []
            for ids in files[1:]:
                _sync(device)
                start = time.perf_counter()
                # Backward inside activate(): checkpointed layers recompute their forward during backward
                # and must read the same memory state as the forward did.
                with patch.activate(state):
                    loss, _ = file_loss(model, patch, state, ids)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                _sync(device)
                primed = time.perf_counter()
                prime_file(patch, state, ids, None, config.chunk_tokens, differentiable=False)
                _sync(device)
                step_s.append(time.perf_counter() - start)
                prime_s.append(time.perf_counter() - primed)
            median = statistics.median(step_s[warmup:])
            entry = {"seconds_per_step": round(median, 4), "prime_seconds": round(statistics.median(prime_s[warmup:]), 4),
                     "all_step_seconds": [round(s, 4) for s in step_s], "last_loss": round(loss.item(), 4),
                     "hours_for_10000_steps": round(median * 10_000 / 3600, 2)}
            if device.startswith("cuda"):
                entry["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
                entry["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
            result["seq_lens"][str(seq_len)] = entry
            _log(f"train{label} seq_len={seq_len}: {entry}")
            del loss
        # Evidence that gradients reached the memory's read path through the checkpointed layers.
        result["parameter_change_norm"] = sum((p.detach() - q).float().pow(2).sum().item()
                                              for p, q in zip(params, initial)) ** 0.5
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        for p in params:
            p.requires_grad_(False)
        if checkpointing:
            _set_checkpointing(model, False)
        model.eval()
    return result


def _set_checkpointing(model, on: bool) -> None:
    """Non-reentrant checkpointing (frozen inputs need no requires_grad). transformers 5.24 calls it activation
    checkpointing; older 5.x only has the gradient_checkpointing_* names."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _is_checkpointing(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def time_modes(model, patch, state, modes: list[str], args, device: str, label: str = "") -> dict:
    """Cold and warm TTFT / per-token latency per mode (``none``, or ``memory`` / ``ablation`` through ``patch``)."""
    vocab = model.config.vocab_size
    results = {}
    for mode in modes:
        mode = Mode(mode)
        context = patch.activate(state, gates=mode.gates) if mode.uses_memory else contextlib.nullcontext()
        cold_runs, warm_runs = [], []
        with context, torch.no_grad():
            time_generation(model, _line_prompt(vocab, 32, NEWLINE_ID, 99), 2, device)  # warm-up (kernels, allocator)
            for repeat in range(args.repeats):
                prompt = _line_prompt(vocab, args.prompt_tokens, NEWLINE_ID, repeat)
                cache = PrefixCache()
                cold_runs.append(time_generation(model, prompt, args.new_tokens, device, cache=cache))
                # One keystroke later: the last token changes and one more is typed.
                typed = prompt[:-1] + [(prompt[-1] + 1) % vocab or 3, 5]
                warm_runs.append(time_generation(model, typed, args.new_tokens, device, cache=cache))
        results[mode] = {"cold": _median_runs(cold_runs), "warm": _median_runs(warm_runs)}
        _log(f"mode {mode}{label}: {results[mode]}")
    return results


def _environment(device: str) -> dict:
    import transformers
    from transformers.utils import import_utils

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "device": device}
    for name in ("is_flash_linear_attention_available", "is_causal_conv1d_available"):
        check = getattr(import_utils, name, None)
        env[name.removeprefix("is_").removesuffix("_available")] = bool(check()) if check else None
    if device.startswith("cuda"):
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "gpu_total_bytes": torch.cuda.get_device_properties(0).total_memory}
    return env


def _log(message: str) -> None:
    print(f"[gpu_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _guarded(results: dict, name: str, fn, device: str):
    """Run one section; on an error record it and go on, so one device run returns every section it can."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - the run must survive any one section (OOM, a kernel, ...)
        _log(f"{name} failed: {type(error).__name__}: {error}")
        traceback.print_exc()
        results["errors"][name] = f"{type(error).__name__}: {error}"
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        return None


def run(args: argparse.Namespace) -> dict:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype) or (torch.float32 if device == "cpu" else torch.bfloat16)
    save = (lambda: Path(args.out).write_text(json.dumps(results, indent=2) + "\n")) if args.out else (lambda: None)
    started = time.perf_counter()
    before = _allocated(device)
    model = build_model(args.tiny, device, dtype)
    _sync(device)
    weights_bytes = _allocated(device) - before
    results: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                     "environment": _environment(device),
                     "config": "tiny" if args.tiny else "Qwen3_5TextConfig() (9B shape)", "dtype": str(dtype),
                     "parameters": sum(p.numel() for p in model.parameters()), "weights_bytes": weights_bytes,
                     "build_seconds": round(time.perf_counter() - started, 1),
                     "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
                     "modes": {}, "memory": {}, "notes": [], "errors": {}}
    _log(f"model built in {results['build_seconds']} s: {results['parameters']:,} parameters, {results['environment']}")
    save()

    if "none" in args.modes:
        none = _guarded(results, "latency none", lambda: time_modes(model, None, None, ["none"], args, device), device)
        results["modes"] |= none or {}
        save()

    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory

    memory_modes = [m for m in args.modes if Mode(m).uses_memory]
    for integration in args.integrations:
        suffix = "" if integration == "additive" else f":{integration}"
        before = _allocated(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        try:
            patch = install_memory(model, MemoryConfig(integration=integration))
        except NotImplementedError as error:
            results["notes"].append(f"integration {integration!r} skipped: {error}")
            _log(results["notes"][-1])
            continue
        try:
            state = patch.new_state()
            info = {"overhead_bytes": _allocated(device) - before,
                    "parameters": sum(p.numel() for p in patch.trainable_parameters()),
                    # Device-independent size: the memory modules' own tensors (the fp32 state is the same order).
                    "module_bytes": sum(t.numel() * t.element_size() for t in patch.memory.parameters()),
                    "layers": list(patch.layers)}
            results["memory"][integration] = info
            timed = _guarded(results, f"latency{suffix}", lambda: time_modes(model, patch, state, memory_modes, args, device, suffix),
                             device) if memory_modes else None
            results["modes"] |= {f"{mode}{suffix}": figures for mode, figures in (timed or {}).items()}
            save()

            def priming() -> float:
                ids = _line_prompt(model.config.vocab_size, args.priming_tokens, NEWLINE_ID, 7)
                _sync(device)
                start = time.perf_counter()
                stats = patch.prime(state, [ids], chunk_tokens=512)
                _sync(device)
                return round(stats.tokens / (time.perf_counter() - start), 1)

            if args.priming_tokens:
                info["priming_tokens_per_s"] = _guarded(results, f"priming{suffix}", priming, device)
                _log(f"priming{suffix}: {info['priming_tokens_per_s']} tokens/s")
                save()
            if device.startswith("cuda"):
                info["inference_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            # training.train() itself runs without checkpointing: "both" also measures what that costs.
            for checkpointing in {"on": [True], "off": [False], "both": [True, False]}[args.checkpointing]:
                if not args.train_steps:
                    break
                key = "train" if checkpointing else "train_no_checkpointing"
                info[key] = _guarded(results, f"{key}{suffix}", lambda: time_training(
                    model, patch, args.train_seq_lens, args.train_steps, args.train_warmup, device,
                    checkpointing=checkpointing, label=suffix + ("" if checkpointing else " (no checkpointing)")), device)
                save()
        finally:
            patch.uninstall()
            del patch, state
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    save()
    return results


def _csv(kind):
    def parse(text: str) -> list:
        return [kind(x) for x in text.split(",") if x.strip()]
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny Qwen3.5 config (CPU): exercises the same code path")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                        help="weights dtype (auto: bf16 on a GPU, fp32 on CPU; --tiny --dtype bf16 rehearses the GPU dtypes)")
    parser.add_argument("--modes", type=_csv(str), default=["none", "memory", "ablation"],
                        help="comma-separated latency modes among none, memory, ablation (default: all three)")
    parser.add_argument("--integrations", type=_csv(str), default=["additive"],
                        help="comma-separated MemoryConfig integrations to benchmark (additive, mag, mac); the memory "
                             "and ablation modes, priming and training run once per integration; one that raises "
                             "NotImplementedError is skipped with a note (default: additive)")
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--priming-tokens", type=int, default=4096, help="0: skip the priming measurement")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="timed memory-training steps per sequence length (0: no training measurement)")
    parser.add_argument("--train-warmup", type=int, default=1, help="untimed training steps before the timed ones")
    parser.add_argument("--train-seq-lens", type=_csv(int), default=[2048, 4096],
                        help="comma-separated file lengths in tokens for the training steps")
    parser.add_argument("--checkpointing", choices=["on", "off", "both"], default="on",
                        help="gradient checkpointing for the training steps; results under train / "
                             "train_no_checkpointing (an out-of-memory error is recorded, not fatal)")
    parser.add_argument("--out", default=None, help="JSON file, rewritten after every section")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if m not in LATENCY_MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}: choose among none, memory, ablation (integrations: --integrations)")
    results = run(args)
    print(json.dumps(results, indent=2))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
