"""Retrieval-head scoring: batched streaming path vs a one-trial-at-a-time eager reference.

The reference is the straightforward implementation of the paper's score: eager attention with
`output_attentions=True`, one trial at a time, the prompt minus its last token prefilled into a KV
cache, then a greedy decoding loop in which every step's attention row of every head is argmax-ed
and compared with the answer span and the token just generated. `interp` runs the same trials in
batches (`run_trials`: prompt passes over shared prefixes, batched decoding), keeping only each
head's argmax key (`DecodeArgmax`).

    python benchmarks/retrieval.py --lengths 300 --depths 0.2,0.8 --needles 4 --batch-size 16 --threads 1

It checks the two give equal results (same outputs, scores equal to float tolerance) and prints
trials per second for both, and the speed-up. `--naive` adds a baseline that calls
`generate(output_attentions=True)` (full prefill patterns materialised, as the eager tools do).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.analyze.trials import _eos_ids, run_trials
from interp.tasks.niah import NEEDLES, NiahConfig, Trial, build_trials, rouge1_recall


@torch.no_grad()
def eager_reference(model, trial: Trial, max_new_tokens: int = 8) -> tuple[str, float, torch.Tensor]:
    """(output text, recall, scores [layer, head]) of one trial, straight from eager `output_attentions`."""
    hf, tok = model.hf, model.tokenizer
    previous = hf.config._attn_implementation
    hf.set_attn_implementation("eager")
    try:
        eos = _eos_ids(model)
        ids = torch.tensor([trial.input_ids], device=model.device)
        start, stop = trial.answer_span
        n_layers, n_heads = hf.config.num_hidden_layers, hf.config.num_attention_heads
        scores = torch.zeros(n_layers, n_heads)
        cache = hf(input_ids=ids[:, :-1], use_cache=True).past_key_values
        inp, sequence, generated = ids[:, -1:], trial.input_ids[:], []
        for _ in range(max_new_tokens):
            out = hf(input_ids=inp, past_key_values=cache, use_cache=True, output_attentions=True)
            cache = out.past_key_values
            token = out.logits[0, -1].argmax().item()
            if token in eos:
                break
            for layer, attn in enumerate(out.attentions):  # attn: [1, head, 1, key]
                for head in range(n_heads):
                    key = attn[0, head, -1].argmax().item()
                    if start <= key < stop and sequence[key] == token:
                        scores[layer, head] += 1 / (stop - start)
            sequence.append(token)
            generated.append(token)
            inp = torch.tensor([[token]], device=model.device)
        text = tok.decode(generated, skip_special_tokens=True)
        return text, rouge1_recall(trial.needle.answer, text), scores
    finally:
        hf.set_attn_implementation(previous)


@torch.no_grad()
def naive_generate(model, trial: Trial, max_new_tokens: int = 8) -> None:
    """The tool-style baseline: eager `generate(output_attentions=True)` (timing only)."""
    hf = model.hf
    previous = hf.config._attn_implementation
    hf.set_attn_implementation("eager")
    try:
        ids = torch.tensor([trial.input_ids], device=model.device)
        hf.generate(
            input_ids=ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_attentions=True,
            return_dict_in_generate=True,
            pad_token_id=model.tokenizer.pad_token_id,
        )
    finally:
        hf.set_attn_implementation(previous)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--lengths", default="300")
    p.add_argument("--depths", default="0.2,0.8")
    p.add_argument("--needles", type=int, default=4, help="how many of the built-in needles")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2,
                   help="time each side this often, alternating; keep the fastest")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--naive", action="store_true", help="also time generate(output_attentions=True)")
    p.add_argument("--json", help="write the measurements here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import interp

    m = interp.load(args.model)
    config = NiahConfig(
        lengths=[int(x) for x in args.lengths.split(",")],
        depths=[float(x) for x in args.depths.split(",")],
        needles=NEEDLES[: args.needles],
    )
    trials = build_trials(m.tokenizer, config, n_ctx=m.adapter.n_ctx)
    run_trials(
        m, trials[:1], batch_size=1, max_new_tokens=2, score=True, progress=False
    ).__next__()  # warm-up

    t_fast = t_ref = float("inf")
    for _ in range(args.repeats):  # alternate the two, keep each one's fastest run (the machine is shared)
        t0 = time.perf_counter()
        fast = {
            r.id: r
            for batch in run_trials(
                m,
                trials,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                score=True,
                progress=False,
            )
            for r in batch
        }
        t_fast = min(t_fast, time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = {t.id: eager_reference(m, t, args.max_new_tokens) for t in trials}
        t_ref = min(t_ref, time.perf_counter() - t0)

    same_output = sum(fast[i].output == ref[i][0] for i in ref)
    max_diff = max((fast[i].scores - ref[i][2]).abs().max().item() for i in ref)
    result = {
        "trials": len(trials),
        "prompt_tokens": sum(len(t.input_ids) for t in trials) / len(trials),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "interp_trials_per_s": len(trials) / t_fast,
        "eager_trials_per_s": len(trials) / t_ref,
        "speedup": t_ref / t_fast,
        "same_output": f"{same_output}/{len(trials)}",
        "max_score_diff": max_diff,
    }
    if args.naive:
        t0 = time.perf_counter()
        for t in trials:
            naive_generate(m, t, args.max_new_tokens)
        result["naive_generate_trials_per_s"] = len(trials) / (time.perf_counter() - t0)
        result["speedup_vs_naive"] = result["interp_trials_per_s"] / result["naive_generate_trials_per_s"]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if same_output == len(trials) and max_diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
