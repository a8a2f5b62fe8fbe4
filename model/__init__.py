"""Models: loading (HF path or id, GGUF), Titans memory, generation, training."""
