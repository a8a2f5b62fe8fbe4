"""Tiny random causal LMs built in code, saved as HF directories, for fast unit tests.

They go through the same loading code users run (``load_model(path)``). The tokenizer is a
byte-level BPE trained in milliseconds on a small Python corpus, so token boundaries behave
like a real code model's (a leading space merges into the next word).
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "import os\nimport sys\nfrom pathlib import Path\n\n",
    "def load_config(path):\n    with open(path) as f:\n        return json.load(f)\n\n",
    "class Server:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n\n",
    "    def start(self):\n        return self.host + ':' + str(self.port)\n\n",
    "for i in range(10):\n    print(i, value, result)\n",
    "if __name__ == '__main__':\n    main(sys.argv[1:])\n",
    "x = [1, 2, 3]\ny = {'a': 1, 'b': 2}\nreturn None\n",
]


FIM_SPECIAL_TOKENS = {  # what real FIM models' tokenizers carry (titans_lsp/fim.py detects them)
    "qwen": ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
    "starcoder": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<repo_name>", "<file_sep>"],
    "deepseek": ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
    "codellama": ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"],
    "smollm2": ["<repo_name>", "<file_sep>"],  # repository tokens but no FIM markers, as the default model
}


def make_tokenizer(vocab_size: int = 384, extra_special: tuple[str, ...] | list[str] = ()):
    """A byte-level BPE tokenizer wrapped as a transformers fast tokenizer (``extra_special``: more
    special tokens, e.g. a FIM family's markers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|bos|>", *extra_special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|bos|>",
                                   pad_token="<|endoftext|>")


def tiny_llama_config(vocab_size: int, layers: int = 4):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                       bos_token_id=1, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)


def tiny_qwen35_config(vocab_size: int, layers: int = 8):
    """Qwen3.5 text config at toy size: 3 DeltaNet layers then one full-attention layer, repeated."""
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                             linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                             linear_value_head_dim=16, max_position_embeddings=4096,
                             bos_token_id=1, eos_token_id=0, pad_token_id=0)


def save_tiny_model(directory: str | Path, arch: str = "llama", seed: int = 0, layers: int | None = None,
                    fim: str | None = None) -> Path:
    """Build a random tiny model of ``arch`` (``llama`` or ``qwen3_5``) and save it with its tokenizer
    (``fim``: a family in FIM_SPECIAL_TOKENS whose special tokens the tokenizer carries)."""
    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    tokenizer = make_tokenizer(extra_special=FIM_SPECIAL_TOKENS[fim] if fim else ())
    vocab = len(tokenizer)
    if arch == "llama":
        config = tiny_llama_config(vocab, layers or 4)
    elif arch == "qwen3_5":
        config = tiny_qwen35_config(vocab, layers or 8)
    else:
        raise ValueError(f"unknown tiny arch {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def assert_cached_generation_equals_uncached(lm, config, prime_text: str, ids, setup=None) -> None:
    """Prime a memory of ``config`` on ``lm`` with ``prime_text``, then check that cached greedy
    generation gives, step by step, the logits of one uncached forward over the whole sequence.
    ``setup(patch)`` runs after installing (e.g. to give untrained parameters a visible effect)."""
    import torch

    from titans_lsp.model.patching import install_memory

    patch = install_memory(lm.model, config)
    if setup is not None:
        setup(patch)
    state = patch.new_state()
    patch.prime(state, [prime_text], lm.tokenizer, chunk_tokens=32)
    try:
        with torch.no_grad(), patch.activate(state):
            out = lm.model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, output_logits=True,
                                    return_dict_in_generate=True, pad_token_id=lm.tokenizer.pad_token_id)
            full = lm.model(out.sequences, use_cache=False).logits
        n = ids.shape[1]
        for step, step_logits in enumerate(out.logits):
            torch.testing.assert_close(step_logits[0], full[0, n - 1 + step], atol=1e-4, rtol=1e-4)
    finally:
        patch.uninstall()
