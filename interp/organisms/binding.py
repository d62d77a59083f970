"""The binding model organism: a tiny `LlamaForCausalLM` trained to solve the binding tasks.

SmolLM2-135M barely binds beyond n = 3, and an analyzer only ever run on a model that cannot bind
proves nothing. This module trains, on CPU in minutes and reproducibly (fixed seeds), a few-layer
Llama with a word-level tokenizer on the plain-format prompts of `interp.tasks.binding` (all
templates, n = 2..12 groups, up to 4 question/answer turns per context, loss on the answer tokens only) and saves it as a standard
transformers checkpoint, so every part of `interp` applies to it unchanged.

    python -m interp.organisms.binding --out data/binding_organism      # ~10 min on 2 CPU cores

Load it like any model:

    >>> from interp.organisms.binding import load_organism
    >>> model, tokenizer = load_organism()  # doctest: +SKIP

Memory: the model is ~0.6M parameters (a few MB); training holds one batch of activations.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.tasks.binding import TEMPLATES, BindingPrompt, BindingTask, accuracy, vocabulary

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "binding_organism"
SPECIALS = ("<pad>", "<unk>", "<eos>")


@dataclass
class OrganismConfig:
    """Architecture and training recipe (every number that decides the result is here)."""

    d_model: int = 64
    n_layers: int = 3
    n_heads: int = 4
    n_kv_heads: int = 2
    d_mlp: int = 128
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    min_groups: int = 2
    max_groups: int = 12
    checkpoint_every: int = 250
    max_questions: int = 4  # question/answer turns per training context (evaluation uses one)
    seed: int = 0
    tie_embeddings: bool = True
    threads: int = 1  # more threads on a shared 2-core box made each step 4x SLOWER (measured)
    eval_groups: tuple[int, ...] = (3, 5, 6, 7, 8, 9, 10)
    eval_per_position: int = 10


def build_tokenizer():
    """A word-level tokenizer over every word the templates can produce (punctuation split off)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(list(SPECIALS) + vocabulary())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>", padding_side="left")


def build_model(cfg: OrganismConfig, vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=0, bos_token_id=None, eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def _example(task: BindingTask, tokenizer, n: int, questions: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Token ids of one context followed by `questions` question/answer turns, and the label per position.

    The first turn is exactly the evaluation prompt (`BindingTask.sample`) plus its answer; further
    turns ask about other groups of the same context (more supervised answers per token computed).
    The word-level tokenizer is compositional over whitespace, so pieces are encoded separately.
    """
    prompt = task.sample(n, rng=rng)
    context = prompt.text[: prompt.text.index("\nQuestion:")]
    ids = tokenizer(context, add_special_tokens=False).input_ids
    labels = [-100] * len(ids)
    for j, q in enumerate([prompt.query] + [rng.randrange(n) for _ in range(questions - 1)]):
        turn = task.render(BindingPrompt(prompt.template, prompt.keys, prompt.answers, q)).text[len(context):]
        piece = tokenizer(turn, add_special_tokens=False).input_ids
        ids += piece
        labels += [-100] * (len(piece) - 1) + [tokenizer.convert_tokens_to_ids(prompt.answers[q])]
        ids.append(labels[-1])
        labels.append(-100)
    return ids[:-1], labels[:-1]  # the last answer token is only a label


def _batch(tasks: list[BindingTask], tokenizer, cfg: OrganismConfig, rng: random.Random):
    """A left-padded batch: input ids, attention mask and labels (-100 except before each answer)."""
    rows = [_example(rng.choice(tasks), tokenizer, rng.randint(cfg.min_groups, cfg.max_groups),
                     rng.randint(1, cfg.max_questions), rng) for _ in range(cfg.batch_size)]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, lab) in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
        labels[i, width - len(row):] = torch.tensor(lab)
    return ids, mask, labels


def train(cfg: OrganismConfig, out: Path | None = None, *, progress: bool = True):
    """Train the organism; return (model, tokenizer, log dict). Saves to `out` when given."""
    from rich.progress import Progress

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    tokenizer = build_tokenizer()
    model = build_model(cfg, len(tokenizer))
    tasks = [BindingTask(name, tokenizer) for name in TEMPLATES]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * max(0.05, 1 - s / cfg.steps))
    log, start, ema = {"loss": []}, time.time(), None
    model.train()
    with Progress(disable=not progress) as bar:
        job = bar.add_task("training binding organism", total=cfg.steps)
        for step in range(cfg.steps):
            ids, mask, labels = _batch(tasks, tokenizer, cfg, rng)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            if step % 50 == 0 or step == cfg.steps - 1:
                log["loss"].append((step, round(ema, 4)))
                if not progress and step % 100 == 0:
                    print(f"step {step} loss {ema:.3f} ({time.time() - start:.0f} s)", flush=True)
            if out is not None and cfg.checkpoint_every and step and step % cfg.checkpoint_every == 0:
                log["train_seconds"] = round(time.time() - start, 1)
                save(model, tokenizer, cfg, log, Path(out))  # resumable inspection of a long run
            bar.update(job, advance=1, description=f"training binding organism (loss {ema:.3f})")
    log["train_seconds"] = round(time.time() - start, 1)
    model.eval()
    log["heldout"] = evaluate(model, tokenizer, cfg, progress=progress)
    if out is not None:
        save(model, tokenizer, cfg, log, Path(out))
    return model, tokenizer, log


def evaluate(model, tokenizer, cfg: OrganismConfig, *, progress: bool = False) -> dict:
    """Held-out accuracy per template and n (fresh prompts from a seed the training never used)."""
    result = {}
    for i, name in enumerate(TEMPLATES):
        report = accuracy(model, tokenizer, BindingTask(name, tokenizer), list(cfg.eval_groups),
                          per_position=cfg.eval_per_position, seed=10_000 + cfg.seed + i, progress=progress)
        result[name] = report.to_json()
    return result


def save(model, tokenizer, cfg: OrganismConfig, log: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "recipe.json").write_text(json.dumps({"config": asdict(cfg), "log": log}, indent=1))


def load_organism(path: str | Path = DEFAULT_DIR):
    """(model, tokenizer) of the shipped organism, in eval mode, float32 on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "model.safetensors").exists():
        raise InterpError(f"no binding organism at {path}: train one with "
                          f"`python -m interp.organisms.binding --out {path}`.")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the binding model organism (seeded, CPU).")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--steps", type=int, default=OrganismConfig.steps)
    parser.add_argument("--seed", type=int, default=OrganismConfig.seed)
    parser.add_argument("--threads", type=int, default=OrganismConfig.threads)
    parser.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any OrganismConfig field, e.g. --set lr=0.01 --set d_model=96")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in OrganismConfig.__dataclass_fields__:
            parser.error(f"--set {item}: no OrganismConfig field {name!r}")
        kind = type(getattr(OrganismConfig, name))
        overrides[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    cfg = OrganismConfig(steps=args.steps, seed=args.seed, threads=args.threads, **overrides)
    _, _, log = train(cfg, args.out, progress=not args.quiet)
    for name, rep in log["heldout"].items():
        print(name, {n: round(a, 3) for n, a in rep["by_n"].items()})
    print(f"trained in {log['train_seconds']} s; saved to {args.out}")


if __name__ == "__main__":
    main()
