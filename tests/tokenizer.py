"""A small byte-level BPE tokenizer, in SmolLM2's image, for the fast tests.

The fast tests need a real subword tokenizer (token-exact needle placement, chat prompts, decoding) but
must not download SmolLM2. This one is trained on the shipped haystack text, with SmolLM2's special
tokens and chat template, and with the binding templates' words as single tokens. It is committed in
`tests/data/small-bpe/` (120 KB); `python tests/tokenizer.py` trains it again, byte-identical.
"""

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from interp.resources import data_path
from interp.tasks.binding import vocabulary

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (  # SmolLM2-Instruct's
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif "
    "%}"
)


SAVED = Path(__file__).parent / "data" / "small-bpe"


@lru_cache(maxsize=1)
def small_tokenizer() -> PreTrainedTokenizerFast:
    """The committed tokenizer (see the module docstring)."""
    return AutoTokenizer.from_pretrained(SAVED)


def train(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Byte-level BPE with `vocab_size` entries, trained on `data/haystack/pride-and-prejudice.txt`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = data_path("haystack", "pride-and-prejudice.txt").read_text(encoding="utf-8").splitlines()
    lines += [f"{w} the {w}, and {w}." for w in vocabulary()] * 30  # binding templates' words: one token each
    tok.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


if __name__ == "__main__":
    train().save_pretrained(SAVED)
    print(f"wrote {SAVED}")
