"""GPU benchmark for a machine with an accelerator: Qwen3.5-9B shape, random bf16 weights.

Speed does not depend on weight values, so a random-weight model built from the default
``Qwen3_5TextConfig`` (the 9B shape) measures the true cost. Everything goes through the code the
server, eval and trainer run: greedy_generate (with or without model/static_decode.py's StaticDecoder),
model/training.py's train(), titans_lsp/residency.py's state sizes.

Sections (each guarded: an error is recorded under ``errors`` and the run goes on; the JSON is
rewritten after every section):
- ``correctness`` (``--check-prompts N``): greedy tokens of every decode variant against the eager
  loop on N prompts per mode (none, ablation, memory with a primed state, hybrid = memory after a
  cross-file block), then a newly published memory without re-capture. A mismatch records where the
  tokens part and the eager top-2 logit margin there (a bf16 near-tie on random weights vs a bug).
- latency per mode and decode variant (``--graphs on|off|both``, ``--graph-backends``): cold TTFT
  (fresh cache), warm TTFT (one keystroke later: DeltaNet states restored from the line-start
  snapshot, attention KV cropped) and per-token decode latency for ``--prompt-tokens``-token prompts.
  Eager rows are under ``modes``, graph rows under ``graph_modes[backend]``.
- memory overhead of the Titans modules, priming tokens/s, and ``capacity``: how many workspaces'
  memory states fit next to the model on this card and on an 80 GB card, COMPUTED from the measured
  state size and peak inference memory (not measured by filling a card).
- ``--train-steps N``: memory-training steps through model/training.py's ``train()`` (the loop
  ``titans-lsp train`` runs; frozen bf16 base, ``--checkpointing`` on/off/both) for files of
  ``--train-seq-lens`` tokens: seconds per step, peak GPU memory, trainable parameters, hours for 10,000 steps.
- ``--ddp`` under ``torchrun``: the same training steps data-parallel (one stream per process);
  throughput in files and tokens per second.

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
import tempfile
import time
import traceback
from pathlib import Path

import torch

from titans_lsp.model.generation import PrefixCache, greedy_generate
from titans_lsp.modes import Mode

# the latency modes this bench times: the base model and the patched one with gates open / shut
LATENCY_MODES = (Mode.NONE.value, Mode.MEMORY.value, Mode.ABLATION.value)
# the correctness check's modes: hybrid is the memory read after a cross-file block
CHECK_MODES = (Mode.NONE, Mode.ABLATION, Mode.MEMORY, Mode.HYBRID)
# decode variants: the dynamic-cache loop, and StaticDecoder back ends ("static": the static path without graphs)
DECODE_VARIANTS = ("eager", "static", "cuda-graph", "compile")
# total memory torch reported for one H100 80GB HBM3 (evals/results/2026-11-26-gpu-h100/gpu_bench.json)
CARD_80GB_BYTES = 85_017_493_504
HEADROOM_BYTES = 2 * 1024**3  # kept free on a card for the allocator, CUDA context and KV caches in flight


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


def make_decoder(model, variant: str, window: int):
    """None for the eager loop, else a StaticDecoder (``static``: its step run eagerly, no graphs)."""
    if variant == "eager":
        return None
    from titans_lsp.model.static_decode import StaticDecoder

    return StaticDecoder(model, window, graphs="off" if variant == "static" else variant)


def time_generation(model, prompt: list[int], new_tokens: int, device: str, cache: PrefixCache | None = None,
                    decoder=None) -> dict:
    """TTFT (prefill + first token) and per-token decode latency of one greedy call."""
    _sync(device)
    start = time.perf_counter()
    result = greedy_generate(model, IdTokenizer(NEWLINE_ID), prompt, new_tokens, cache=cache, cache_key="bench", lookahead=0,
                             stop=None, decoder=decoder)
    _sync(device)
    total = time.perf_counter() - start
    if cache is not None and cache.past is not None and int(cache.past.get_seq_length()) != len(cache.ids):
        # Seen twice: transformers < 5.24 silently ignores generation.py's cache= (it takes past_key_values), and
        # 5.25's linear-attention token count was not rolled back by restore_to (fixed): a length check, not a verdict.
        from importlib.metadata import requires

        import transformers

        pin = next((r for r in requires("titans-lsp") or [] if r.startswith("transformers")), "transformers (see pyproject)")
        raise RuntimeError(f"the model did not fill the cache ({cache.past.get_seq_length()} of {len(cache.ids)} tokens) "
                           f"with transformers {transformers.__version__}; titans-lsp needs {pin} (below 5.24 the cache= "
                           "argument is ignored); with such a version this is a bug in model/generation.py's cache handling")
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
    ids = torch.randint(3, vocab, (tokens,), generator=g).tolist()
    for i in range(11, tokens, 12):
        ids[i] = newline_id
    return ids


def _mode_context(patch, state, mode: Mode):
    return patch.activate(state, gates=mode.gates) if mode.uses_memory else contextlib.nullcontext()


def time_training(model, patch, seq_lens: list[int], steps: int, warmup: int, device: str,
                  checkpointing: bool = True, label: str = "", dist=None) -> dict:
    """Seconds per memory-training step at each sequence length, through model/training.py's ``train()``:
    the loop ``titans-lsp train`` runs, here with a synthetic repository of random-id files (speed does not
    depend on the values) and the bench's in-memory model instead of one loaded from disk.

    One step is what ``train()`` does per file: the loss on a ``seq_len``-token file with the memory primed
    by the repository's earlier files, backward inside ``patch.activate()`` (checkpointed layers recompute
    with the same memory), gradient clip, AdamW, then priming that file. Per-step seconds come from
    train_log.csv; ``dist`` (torchrun) runs it data-parallel with one stream per process."""
    import csv

    from titans_lsp.distributed import SINGLE
    from titans_lsp.model.training import TrainConfig, train

    dist = dist or SINGLE
    vocab = model.config.vocab_size
    params = patch.trainable_parameters()
    result: dict = {"trainable_parameters": sum(p.numel() for p in params), "gradient_checkpointing": checkpointing,
                    "chunk_tokens": TrainConfig().chunk_tokens, "timed_steps": steps, "warmup_steps": warmup,
                    "processes": dist.world, "loop": "model/training.py train() (titans-lsp train's loop)",
                    "seq_lens": {}}
    initial = [p.detach().clone() for p in params]
    try:
        for seq_len in seq_lens:
            files = warmup + steps + 1  # the first file of a repository is primed, not scored
            repos = [[_line_prompt(vocab, seq_len, NEWLINE_ID, 1000 + 100 * r + i) for i in range(files)]
                     for r in range(dist.world)]
            config = TrainConfig(max_steps=warmup + steps, seq_len=seq_len, warmup_steps=1, eval_every=10**9,
                                 checkpoint_every=10**9, batch_size=dist.world, gradient_checkpointing=checkpointing)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            with tempfile.TemporaryDirectory(prefix="gpu-bench-train-") as out:
                out = dist.broadcast(out)  # rank 0's directory (one machine: torchrun on its GPUs)
                train(model, patch, IdTokenizer(NEWLINE_ID), repos, [], config, out, progress=False, dist=dist)
                rows = list(csv.DictReader((Path(out) / "train_log.csv").open())) if dist.is_main else []
                dist.barrier()
            if not dist.is_main:
                continue
            elapsed = [float(r["seconds"]) for r in rows]
            step_s = [b - a for a, b in zip([0.0] + elapsed, elapsed)]
            median = statistics.median(step_s[warmup:])
            entry = {"seconds_per_step": round(median, 4), "all_step_seconds": [round(x, 4) for x in step_s],
                     "last_loss": float(rows[-1]["loss"]), "hours_for_10000_steps": round(median * 10_000 / 3600, 2),
                     "files_per_second": round(dist.world / median, 3) if median else None,
                     "tokens_per_second": round(dist.world * seq_len / median, 1) if median else None}
            if device.startswith("cuda"):
                entry["peak_allocated_bytes"] = max(int(r.get("peak_allocated_bytes") or 0) for r in rows)
                entry["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
            result["seq_lens"][str(seq_len)] = entry
            _log(f"train{label} seq_len={seq_len}: {entry}")
        # Evidence that gradients reached the memory's read path through the checkpointed layers.
        result["parameter_change_norm"] = sum((p.detach() - q).float().pow(2).sum().item()
                                              for p, q in zip(params, initial)) ** 0.5
        result["gradient_checkpointing"] = checkpointing
    finally:
        for p in params:
            p.requires_grad_(False)
        model.eval()
    return result


def time_modes(model, patch, state, modes: list[str], args, device: str, label: str = "", decoder=None) -> dict:
    """Cold and warm TTFT / per-token latency per mode (``none``, or ``memory`` / ``ablation`` through ``patch``)."""
    vocab = model.config.vocab_size
    results = {}
    for mode in modes:
        mode = Mode(mode)
        cold_runs, warm_runs = [], []
        with _mode_context(patch, state, mode), torch.no_grad():
            # warm-up: kernels, allocator, and with a graph back end the capture of this mode's decode step
            time_generation(model, _line_prompt(vocab, 32, NEWLINE_ID, 99), 3, device, decoder=decoder)
            captures = getattr(decoder, "captures", None)
            for repeat in range(args.repeats):
                prompt = _line_prompt(vocab, args.prompt_tokens, NEWLINE_ID, repeat)
                cache = PrefixCache()
                cold_runs.append(time_generation(model, prompt, args.new_tokens, device, cache=cache, decoder=decoder))
                # One keystroke later: the last token changes and one more is typed.
                typed = prompt[:-1] + [(prompt[-1] + 1) % vocab or 3, 5]
                warm_runs.append(time_generation(model, typed, args.new_tokens, device, cache=cache, decoder=decoder))
        results[mode.value] = {"cold": _median_runs(cold_runs), "warm": _median_runs(warm_runs)}
        if decoder is not None:
            results[mode.value]["captures_while_timed"] = decoder.captures - captures  # 0: one capture, then replays
        _log(f"mode {mode}{label}: {results[mode.value]}")
    return results


def _eager_margin(model, ids: list[int]) -> float:
    """Top-1 minus top-2 logit of the eager model after ``ids`` (uncached): how close the disagreement was."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=next(model.parameters()).device), logits_to_keep=1).logits[0, -1]
    top = torch.topk(logits.float(), 2).values
    return round(float(top[0] - top[1]), 5)


def check_tokens(model, patch, state, variants: dict, args, device: str) -> dict:
    """Greedy tokens of each decode variant vs the eager loop, ``args.check_prompts`` prompts per mode, then
    after publishing a new memory (a new state object whose values the decoders copy in: no re-capture)."""
    vocab = model.config.vocab_size
    tok = IdTokenizer(NEWLINE_ID)
    block = _line_prompt(vocab, args.check_tokens, NEWLINE_ID, 4242)  # hybrid's cross-file block
    out: dict = {name: {} for name in variants}

    def compare(mode: Mode, state_, prompts: list[list[int]], into: dict) -> None:
        with _mode_context(patch, state_, mode), torch.no_grad():
            for i, prompt in enumerate(prompts):
                expected = greedy_generate(model, tok, prompt, args.check_new_tokens, lookahead=0).token_ids
                for name, decoder in variants.items():
                    got = greedy_generate(model, tok, prompt, args.check_new_tokens, lookahead=0, decoder=decoder).token_ids
                    entry = into[name].setdefault(mode.value, {"prompts": 0, "identical": 0, "mismatches": []})
                    entry["prompts"] += 1
                    if got == expected:
                        entry["identical"] += 1
                        continue
                    at = next((j for j, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
                    entry["mismatches"].append({"prompt": i, "position": at,
                                                "eager_top2_margin": _eager_margin(model, prompt + expected[:at])})

    for mode in CHECK_MODES:
        prompts = [_line_prompt(vocab, args.check_tokens, NEWLINE_ID, 500 + i) for i in range(args.check_prompts)]
        if mode.uses_context:
            prompts = [block + p for p in prompts]
        compare(mode, state, prompts, out)
        _log(f"correctness {mode}: " + ", ".join(f"{n} {out[n][mode.value]['identical']}/{out[n][mode.value]['prompts']}"
                                               for n in variants))
    # publish: the workspace's memory becomes a new, further-primed state; graphs must not be captured again
    captures = {name: getattr(d, "captures", 0) for name, d in variants.items()}
    published = state.copy()
    patch.prime(published, [_line_prompt(vocab, 256, NEWLINE_ID, 77)], chunk_tokens=512)
    after: dict = {name: {} for name in variants}
    prompts = [_line_prompt(vocab, args.check_tokens, NEWLINE_ID, 900 + i) for i in range(max(2, args.check_prompts // 4))]
    compare(Mode.MEMORY, published, prompts, after)
    for name, decoder in variants.items():
        out[name]["after_publish"] = after[name].get("memory")
        out[name]["captures_after_publish"] = getattr(decoder, "captures", 0) - captures[name]
        out[name]["memory_copies"] = getattr(decoder, "memory_copies", None)
    return out


def capacity(card_bytes: int, model_bytes: int, peak_inference_bytes: int, one_state_bytes: int) -> dict:
    """How many workspaces' memory states fit on a card next to the model: COMPUTED as (card - peak inference
    allocation with one workspace - headroom) / state size, not measured by filling a card."""
    free = card_bytes - max(peak_inference_bytes, model_bytes) - HEADROOM_BYTES
    return {"card_bytes": card_bytes, "computed": True, "state_bytes": one_state_bytes,
            "model_and_inference_bytes": max(peak_inference_bytes, model_bytes), "headroom_bytes": HEADROOM_BYTES,
            "workspaces_on_device": max(0, free // one_state_bytes) if one_state_bytes else None}


def _environment(device: str) -> dict:
    import transformers
    from transformers.utils import import_utils

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "device": device}
    for name in ("is_flash_linear_attention_available", "is_causal_conv1d_available"):
        check = getattr(import_utils, name, None)
        env[name.removeprefix("is_").removesuffix("_available")] = bool(check()) if check else None
    if device.startswith("cuda"):
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "gpu_total_bytes": torch.cuda.get_device_properties(0).total_memory,
                "gpu_count": torch.cuda.device_count()}
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


def _variants(args, device: str) -> list[str]:
    """The decode variants to time: the eager loop and/or the graph back ends (``static`` on a CPU)."""
    backends = args.graph_backends or (["cuda-graph"] if device.startswith("cuda") else ["static"])
    return {"off": ["eager"], "on": backends, "both": ["eager"] + backends}[args.graphs]


def _dtype(args, device: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype) or (torch.float32 if device == "cpu" else torch.bfloat16)


def run(args: argparse.Namespace) -> dict:
    from titans_lsp.residency import state_bytes

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _dtype(args, device)
    save = (lambda: Path(args.out).write_text(json.dumps(results, indent=2) + "\n")) if args.out else (lambda: None)
    started = time.perf_counter()
    before = _allocated(device)
    model = build_model(args.tiny, device, dtype)
    _sync(device)
    weights_bytes = _allocated(device) - before
    variants = _variants(args, device)
    window = args.prompt_tokens + args.new_tokens + 8
    results: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                     "environment": _environment(device),
                     "config": "tiny" if args.tiny else "Qwen3_5TextConfig() (9B shape)", "dtype": str(dtype),
                     "parameters": sum(p.numel() for p in model.parameters()), "weights_bytes": weights_bytes,
                     "build_seconds": round(time.perf_counter() - started, 1),
                     "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
                     "decode_variants": variants, "modes": {}, "graph_modes": {}, "correctness": {}, "memory": {},
                     "notes": [], "errors": {}}
    _log(f"model built in {results['build_seconds']} s: {results['parameters']:,} parameters, {results['environment']}")
    save()

    def latency(patch, state, modes: list[str], suffix: str = "") -> None:
        for variant in variants:
            decoder = make_decoder(model, variant, window)
            timed = _guarded(results, f"latency {','.join(modes)}{suffix} ({variant})",
                             lambda: time_modes(model, patch, state, modes, args, device, f"{suffix} ({variant})", decoder),
                             device) or {}
            target = results["modes"] if variant == "eager" else results["graph_modes"].setdefault(variant, {})
            target |= {f"{mode}{suffix}": figures for mode, figures in timed.items()}
            decoder = None  # free its static cache and graphs before the next variant
            save()

    if "none" in args.modes:
        latency(None, None, ["none"])

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
            # "memory with a primed state": the memory read then depends on what was written
            patch.prime(state, [_line_prompt(model.config.vocab_size, 512, NEWLINE_ID, 5)], chunk_tokens=512)
            info = {"overhead_bytes": _allocated(device) - before,
                    "parameters": sum(p.numel() for p in patch.trainable_parameters()),
                    # Device-independent size: the memory modules' own tensors.
                    "module_bytes": sum(t.numel() * t.element_size() for t in patch.memory.parameters()),
                    # One workspace's memory state (weights, momentum, initial; fp32): what the LRU moves.
                    "state_bytes": state_bytes(state), "layers": list(patch.layers)}
            for p in patch.memory.parameters():
                p.requires_grad_(False)
            results["memory"][integration] = info
            if args.check_prompts and integration == "additive":
                checked = [v for v in variants if v != "eager"] or ["static"]
                decoders = {v: make_decoder(model, v, 2 * args.check_tokens + args.check_new_tokens + 8) for v in checked}
                results["correctness"] = _guarded(results, "correctness",
                                                  lambda: check_tokens(model, patch, state, decoders, args, device), device) or {}
                decoders = None
                save()
            if memory_modes:
                latency(patch, state, memory_modes, suffix)

            def priming() -> float:
                ids = _line_prompt(model.config.vocab_size, args.priming_tokens, NEWLINE_ID, 7)
                primed = state.copy()
                _sync(device)
                start = time.perf_counter()
                stats = patch.prime(primed, [ids], chunk_tokens=512)
                _sync(device)
                return round(stats.tokens / (time.perf_counter() - start), 1)

            if args.priming_tokens:
                info["priming_tokens_per_s"] = _guarded(results, f"priming{suffix}", priming, device)
                _log(f"priming{suffix}: {info['priming_tokens_per_s']} tokens/s")
                save()
            model_bytes = sum(t.numel() * t.element_size() for t in model.parameters())  # base + memory modules
            info["capacity"] = {"80GB_card": capacity(CARD_80GB_BYTES, model_bytes, model_bytes, info["state_bytes"])}
            if device.startswith("cuda"):
                info["inference_peak_allocated_bytes"] = peak = torch.cuda.max_memory_allocated()
                info["capacity"] = {"this_card": capacity(torch.cuda.get_device_properties(0).total_memory, model_bytes,
                                                          peak, info["state_bytes"]),
                                    "80GB_card": capacity(CARD_80GB_BYTES, model_bytes, peak, info["state_bytes"])}
            _log(f"capacity{suffix} (computed, not measured): {info['capacity']}")
            save()
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
            patch = state = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    save()
    return results


def run_ddp(args: argparse.Namespace) -> dict:
    """Under torchrun: the training steps data-parallel, one repository stream per process (NCCL on GPUs,
    gloo on CPUs). Rank 0 writes the results."""
    from titans_lsp import distributed
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.model.patching import install_memory

    device_flag = args.device or "auto"
    dist = distributed.from_env(device_flag)
    device = distributed.device_for(device_flag, dist)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    results: dict = {"processes": dist.world, "device": device, "errors": {}, "notes": []}
    try:
        model = build_model(args.tiny, device, _dtype(args, device))
        patch = install_memory(model, MemoryConfig())
        if dist.world == 1:
            results["notes"].append("one process: data-parallel throughput equals the single-process train figure")
        results["train"] = _guarded(results, "ddp train", lambda: time_training(
            model, patch, args.train_seq_lens, args.train_steps, args.train_warmup, device,
            checkpointing=args.checkpointing != "off", label=f" (ddp x{dist.world})", dist=dist), device)
        if dist.is_main and args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        distributed.shutdown()
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
    parser.add_argument("--graphs", choices=["on", "off", "both"], default="both",
                        help="time the eager loop (off), the graph-captured static path (on), or both in the same run")
    parser.add_argument("--graph-backends", type=_csv(str), default=None,
                        help="StaticDecoder back ends for --graphs on/both: cuda-graph, compile, static (no graphs) "
                             "(default: cuda-graph on a GPU, static on a CPU)")
    parser.add_argument("--check-prompts", type=int, default=0,
                        help="correctness: prompts per mode (none, ablation, memory, hybrid) whose tokens every graph "
                             "back end must reproduce (0: skip)")
    parser.add_argument("--check-tokens", type=int, default=128, help="prompt tokens for the correctness check")
    parser.add_argument("--check-new-tokens", type=int, default=8, help="tokens decoded per correctness prompt")
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
    parser.add_argument("--ddp", action="store_true",
                        help="under torchrun: only the training steps, data-parallel (one stream per process)")
    parser.add_argument("--out", default=None, help="JSON file, rewritten after every section")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if m not in LATENCY_MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}: choose among none, memory, ablation (integrations: --integrations)")
    bad = [b for b in args.graph_backends or [] if b not in DECODE_VARIANTS[1:]]
    if bad:
        parser.error(f"unknown graph back end(s) {bad}: choose among {', '.join(DECODE_VARIANTS[1:])}")
    if args.ddp:
        if not args.train_steps:
            parser.error("--ddp times training steps: give --train-steps N")
        results = run_ddp(args)
    else:
        results = run(args)
    print(json.dumps(results, indent=2))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
