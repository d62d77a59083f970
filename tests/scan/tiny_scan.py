"""A tiny random Llama saved with a small SmolLM2-style tokenizer, and small scan settings, for fast scan
tests."""

from pathlib import Path

import torch
import transformers as tf

SMALL = {"heads": {"n_random": 4, "half_len": 12, "batch_size": 2, "text_tokens": 24, "n_text": 2}}


def save_tiny(path: Path, seed: int = 0) -> Path:
    from tokenizer import small_tokenizer  # tests/tokenizer.py: offline, no model download

    tok = small_tokenizer()
    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
