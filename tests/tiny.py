"""Tiny random models of every supported family, for fast exact tests (seconds on CPU)."""

import torch
import transformers as tf

VOCAB = 96


def _llama_like(config_cls, **extra):
    return config_cls(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **extra)


CONFIGS = {
    "llama": lambda: _llama_like(tf.LlamaConfig),
    "mistral": lambda: _llama_like(tf.MistralConfig, sliding_window=None),
    "qwen2": lambda: _llama_like(tf.Qwen2Config),
    "gemma": lambda: _llama_like(tf.GemmaConfig, head_dim=8),
    "gemma2": lambda: _llama_like(tf.Gemma2Config, head_dim=8, sliding_window=4, query_pre_attn_scalar=8),
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                  bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda: tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         max_position_embeddings=128),
}
DECODER_ONLY = list(CONFIGS)


def tiny_model(family: str, attn: str = "sdpa", seed: int = 0) -> tf.PreTrainedModel:
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    try:
        model = tf.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    except ValueError:  # e.g. Gemma-2 has no SDPA path (soft-capping): its default is eager
        model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval()


def padded_batch(seed: int = 0, lengths=(7, 4, 9)) -> dict[str, torch.Tensor]:
    """A left-padded batch of random token ids with the given real lengths."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
        ids[i, : width - n] = 0
    return {"input_ids": ids, "attention_mask": mask}


def tiny_whisper(attn: str = "sdpa", seed: int = 0) -> tf.WhisperForConditionalGeneration:
    torch.manual_seed(seed)
    config = tf.WhisperConfig(vocab_size=VOCAB, num_mel_bins=8, encoder_layers=2, decoder_layers=2,
                              encoder_attention_heads=4, decoder_attention_heads=4, d_model=32,
                              encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
                              max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              decoder_start_token_id=1)
    return tf.WhisperForConditionalGeneration._from_config(config, attn_implementation=attn).eval()


def tiny_t5(attn: str = "sdpa", seed: int = 0) -> tf.T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = tf.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                         num_heads=4, decoder_start_token_id=0)
    return tf.T5ForConditionalGeneration._from_config(config, attn_implementation=attn).eval()


def eager_twin(model: tf.PreTrainedModel, build) -> tf.PreTrainedModel:
    """The same weights with eager attention: the reference every parity test compares against."""
    twin = build("eager")
    twin.load_state_dict(model.state_dict())
    return twin


class DigitsTokenizer:
    """Just enough tokenizer for a tiny random model: ids print as numbers."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def copying_llama():
    """A tiny Llama (`interp.Model`, digit tokenizer) that can only generate ids 3..11, the ids of the
    retrieval tests' prompts, so its heads can copy a needle; it never stops early."""
    from interp.models.model import as_model

    hf = tiny_model("llama", seed=3)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        keep = torch.zeros(hf.lm_head.weight.shape[0], dtype=torch.bool)
        keep[3:12] = True
        hf.lm_head.weight[~keep] = 0.0
        hf.lm_head.weight[keep] *= 10.0
    return as_model(hf, tokenizer=DigitsTokenizer())
