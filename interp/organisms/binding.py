"""The binding model organism: a tiny `LlamaForCausalLM` trained to solve the binding tasks.

SmolLM2-135M barely binds beyond n = 3, and an analyzer only ever run on a model that cannot bind
proves nothing. This module trains, on CPU and reproducibly (fixed seed and thread count), a 2-layer
Llama (d_model 128, 8 heads, word-level tokenizer) on the plain-format prompts of
`interp.tasks.binding` and saves it as a standard transformers checkpoint, so every part of `interp`
applies to it unchanged.

The recipe (the `OrganismConfig` defaults; every choice below was measured, see docs/binding.md):
- all four templates; each context is followed by one question turn per group (the first is
  exactly the evaluation prompt), and a 4-d attention mask lets every turn see only the context and
  itself, so a context yields n independent evaluation prompts and no turn can answer by eliminating
  the answers of earlier turns (with plain causal turns the model learned exactly that shortcut and
  stayed at chance on the first question); loss on the answer tokens only;
- examples packed several to a row (the mask keeps them apart), so no compute goes to padding;
- curriculum: n = 2 only until the running answer accuracy passes 0.85, then n = 2..12 in one jump
  (widening 2 at a time stalled on a solution that only handles n <= 3);
- AdamW lr 2e-3, 100 warmup steps, cosine decay over 8000 steps, batch 32 examples, 2 threads;
  training stops once the running accuracy on n = 2..12 passes 0.995.

    python -m interp.organisms.binding --out data/binding_organism

Measured on the 2-core box: 432 s (n = 2 learned by step 1296, binding at n = 2..12 jumps from
0.5 to 0.99 between steps 2900 and 3650, stopped at step 3667); the shipped weights answer 99-100% of
held-out prompts at n = 3..10 for every template. Deterministic for a given thread count; it
checkpoints every `checkpoint_every` steps.

Load it like any model:

    >>> from interp.organisms.binding import load_organism
    >>> model, tokenizer = load_organism()  # doctest: +SKIP

Memory: the model is ~0.36M parameters (a few MB); training holds one batch of activations.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.resources import data_path
from interp.tasks.binding import TEMPLATES, BindingPrompt, BindingTask, accuracy, vocabulary

DEFAULT_DIR = data_path("binding_organism")
SPECIALS = ("<pad>", "<unk>", "<eos>")


@dataclass
class OrganismConfig:
    """Architecture and training recipe (every number that decides the result is here)."""

    d_model: int = 128
    n_layers: int = 2  # an induction-style lookup needs two
    n_heads: int = 8
    n_kv_heads: int = 8
    d_mlp: int = 256
    steps: int = 8000  # at most: training stops once the running accuracy passes `stop_at`
    cosine_steps: int = 0  # length of the cosine schedule (0: `steps`); a run may stop before it ends
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    min_groups: int = 2
    max_groups: int = 12
    start_groups: int = 2  # curriculum: n = min_groups..start_groups until the model answers them
    # ... then widen the range by `widen_by` whenever the running answer accuracy passes this
    widen_at: float = 0.85
    widen_by: int = 10  # (one jump to 2..12: widening by 2 at a time got stuck on a solution for n <= 3 only)
    widen_lr: float = 0.0  # peak learning rate from the widening on (0: keep `lr`)
    # stop once the running answer accuracy on the full range of n passes this (0: never)
    stop_at: float = 0.995
    checkpoint_every: int = 250
    # weight of an auxiliary next-token loss on every other token (context and questions)
    lm_weight: float = 0.0
    max_questions: int = 0  # question/answer turns per context; 0 = every group once (denser signal)
    seed: int = 0
    tie_embeddings: bool = True
    threads: int = 2  # results are deterministic for a given thread count; on a busy box 1 can be faster
    eval_groups: tuple[int, ...] = (3, 5, 6, 7, 8, 9, 10)
    eval_per_position: int = 10
    pack: bool = True  # several examples per row (no compute on padding); False: one per row, left-padded


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


def _example(task: BindingTask, tokenizer, n: int, questions: int, rng: random.Random, *,
             turns: bool = False):
    """Token ids of one context followed by `questions` question turns, and the label per position.

    The first turn is exactly the evaluation prompt (`BindingTask.sample`); further turns ask about
    other (distinct while `questions <= n`) groups of the same context. Each turn ends at the answer's
    lead-in, labelled with the answer; answers are never part of the input. With `turns=True` the turn
    index of every token (0 = context) comes third: training masks attention so that each turn sees
    only the context and itself (n independent evaluation prompts sharing one context, so no turn can
    answer by elimination of earlier answers). The word-level tokenizer is compositional over
    whitespace, so pieces are encoded separately.
    """
    prompt = task.sample(n, rng=rng)
    context = prompt.text[: prompt.text.index("\nQuestion:")]
    ids = tokenizer(context, add_special_tokens=False).input_ids
    labels = [-100] * len(ids)
    turn = [0] * len(ids)
    others = [g for g in range(n) if g != prompt.query]
    rng.shuffle(others)
    # distinct while questions <= n
    queries = [prompt.query] + (others * (1 + questions // n))[: questions - 1]
    for j, q in enumerate(queries, 1):
        text = task.render(BindingPrompt(prompt.template, prompt.keys, prompt.answers, q)).text[len(context):]
        piece = tokenizer(text, add_special_tokens=False).input_ids
        ids += piece
        labels += [-100] * (len(piece) - 1) + [tokenizer.convert_tokens_to_ids(prompt.answers[q])]
        turn += [j] * len(piece)
    return (ids, labels, turn) if turns else (ids, labels)


def _batch(tasks: list[BindingTask], tokenizer, cfg: OrganismConfig, rng: random.Random, max_groups: int):
    """A batch: input ids, 4-d attention mask, position ids and labels (-100 except before answers).

    Token i attends to token j <= i of the same example when j is in the context or in i's own
    question turn; positions restart after the context in every turn, so each turn is exactly an
    evaluation prompt. With `cfg.pack`, several examples share a row (first-fit, longest first, rows
    as wide as the longest example): the mask keeps them apart, and no compute goes to padding
    (n = 2..12 padded to the longest wastes ~45% of every step).
    """
    examples = []
    for _ in range(cfg.batch_size):
        n = rng.randint(cfg.min_groups, max_groups)
        questions = n if cfg.max_questions <= 0 else rng.randint(1, cfg.max_questions)
        examples.append(_example(rng.choice(tasks), tokenizer, n, questions, rng, turns=True))
    width = max(len(ids) for ids, _, _ in examples)
    rows: list[list[tuple]] = []
    for ex in sorted(examples, key=lambda e: -len(e[0])) if cfg.pack else examples:
        free = [r for r in rows if cfg.pack and sum(len(e[0]) for e in r) + len(ex[0]) <= width]
        if free:
            free[0].append(ex)
        else:
            rows.append([ex])
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    example = torch.zeros(len(rows), width, dtype=torch.long)  # 1, 2, ... within a row; 0 = padding
    turn = torch.zeros(len(rows), width, dtype=torch.long)
    pos = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        at = width - sum(len(e[0]) for e in row)  # padding first (left), as in inference
        for j, (row_ids, row_labels, row_turns) in enumerate(row, 1):
            span = slice(at, at + len(row_ids))
            ids[i, span], labels[i, span] = torch.tensor(row_ids), torch.tensor(row_labels)
            turn[i, span], example[i, span] = torch.tensor(row_turns), j
            context = row_turns.count(0)
            pos[i, span] = torch.tensor([k if t == 0 else context + k - row_turns.index(t)
                                         for k, t in enumerate(row_turns)])
            at += len(row_ids)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same = (example[:, None, :] == example[:, :, None]) & (example[:, None, :] > 0)  # [batch, query, key]
    see = (turn[:, None, :] == 0) | (turn[:, None, :] == turn[:, :, None])
    mask = (causal & same & see) | torch.eye(width, dtype=torch.bool)  # pads see themselves
    return ids, mask[:, None], pos, labels


def train(cfg: OrganismConfig, out: Path | None = None, *, progress: bool = True, init: Path | None = None):
    """Train the organism; return (model, tokenizer, log dict). Saves to `out` when given.

    `init`: continue from the weights of a saved organism (a second stage of a recipe; its recipe.json
    is kept under `log["init"]` so the whole history stays in the output). torch's thread count is
    set to `cfg.threads` for the run and restored after.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, out, progress=progress, init=init)
    finally:
        torch.set_num_threads(previous)


def _train(cfg: OrganismConfig, out: Path | None, *, progress: bool, init: Path | None):
    from rich.progress import Progress

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = build_tokenizer()
    model = build_model(cfg, len(tokenizer))
    parent = None
    if init is not None:
        start_model, _ = load_organism(init)
        model.load_state_dict(start_model.state_dict())
        parent = json.loads((Path(init) / "recipe.json").read_text())
    tasks = [BindingTask(name, tokenizer) for name in TEMPLATES]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    horizon = max(1, cfg.cosine_steps or cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, cosine decay to 5% at `horizon`
        opt,
        lambda s: min(1.0, (s + 1) / cfg.warmup) * (0.05
                                                    + 0.95 * 0.5 * (1 + math.cos(math.pi * s / horizon))))
    log, start, ema, ema_acc = {"loss": [], "widen": []}, time.time(), None, 0.0
    if parent is not None:
        log["init"] = {"path": str(init), "config": parent["config"], "log": parent["log"]}
    groups = min(cfg.start_groups, cfg.max_groups) if cfg.start_groups else cfg.max_groups
    model.train()
    with Progress(disable=not progress) as bar:
        job = bar.add_task("training binding organism", total=cfg.steps)
        for step in range(cfg.steps):
            ids, mask, pos, labels = _batch(tasks, tokenizer, cfg, rng, groups)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
            if cfg.lm_weight:  # next token of the same turn (or of the context / first turn) everywhere else
                nxt = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)
                real = (ids != 0) & (nxt != 0) & (labels == -100)  # not padding, not an answer position
                lm = torch.where(real, nxt, -100)
                lm_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), lm.flatten())
                loss = loss + cfg.lm_weight * lm_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                sup = labels != -100
                acc = (logits.argmax(-1)[sup] == labels[sup]).float().mean().item()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            ema_acc = 0.95 * ema_acc + 0.05 * acc
            if groups < cfg.max_groups and ema_acc > cfg.widen_at:  # curriculum: widen the range of n
                groups, ema_acc = min(cfg.max_groups, groups + cfg.widen_by), 0.0
                if cfg.widen_lr:
                    sched.base_lrs = [cfg.widen_lr for _ in sched.base_lrs]
                log["widen"].append((step, groups))
                if not progress:
                    print(f"step {step}: n = {cfg.min_groups}..{groups}", flush=True)
            if step % 50 == 0 or step == cfg.steps - 1:
                log["loss"].append((step, round(ema, 4), round(ema_acc, 3), groups))
                if not progress and step % 50 == 0:
                    print(f"step {step} loss {ema:.3f} acc {ema_acc:.3f} n<={groups} "
                          f"({time.time() - start:.0f} s)",
                          flush=True)
            if out is not None and cfg.checkpoint_every and step and step % cfg.checkpoint_every == 0:
                log["train_seconds"] = round(time.time() - start, 1)
                save(model, tokenizer, cfg, log, Path(out))  # resumable inspection of a long run
            bar.update(job, advance=1, description=f"training binding organism (loss {ema:.3f})")
            if cfg.stop_at and groups == cfg.max_groups and ema_acc > cfg.stop_at:
                log["stopped"] = step
                log["loss"].append((step, round(ema, 4), round(ema_acc, 3), groups))
                break
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
    parser.add_argument("--init", type=Path, default=None, help="continue from a saved organism's weights")
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
    _, _, log = train(cfg, args.out, progress=not args.quiet, init=args.init)
    for name, rep in log["heldout"].items():
        print(name, {n: round(a, 3) for n, a in rep["by_n"].items()})
    print(f"trained in {log['train_seconds']} s; saved to {args.out}")


if __name__ == "__main__":
    main()
