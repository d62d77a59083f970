"""The `interp compress` experiment: head scores, policies, and the resumable grid of cells.

One cell = (method, draw, fraction, length): greedy NIAH recall on the evaluation trials of that
length (one prompt at a time, a chunked prefill then `max_new_tokens` decoding steps, timed apart;
trials that share the haystack before their needle prefill it once), held-out perplexity on
`--ppl-windows` windows of that length, KV bytes (policy and stored), and the process RSS at the
cell's start and its sampled peak while the cell's first prompt is prefilled and decoded alone.
Finished cells are saved under `out/parts/cells/`; `out/settings.json` keeps the settings they
depend on, so a resume with other ones is refused.
"""

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from interp.analyze.prune import heldout_windows
from interp.analyze.retrieval import retrieval_scores
from interp.analyze.trials import RECALL_THRESHOLD
from interp.errors import InterpError
from interp.intervene.compress import KVPolicy, cache_bytes, compress, prefill, select_kv_heads
from interp.intervene.compress.duo import DuoConfig, train_gates
from interp.intervene.compress.heuristics import random_scores, sink_scores
from interp.intervene.compress.prefill import output_cache
from interp.intervene.compress.select import kv_head_scores, top_fraction
from interp.memory import PeakRSS, trim_heap
from interp.progress import track
from interp.report.compress import cell_name
from interp.scan.store import Parts, atomic_write_json, read_json
from interp.tasks.niah import HELDOUT_TEXT, NEEDLES, NiahConfig, build_trials, read_haystack, rouge1_recall

# Settings a saved cell or score depends on; methods, fractions, lengths and draws can grow between runs.
RESULT_SETTINGS = ("sink", "window", "depths", "score_lengths", "duo_steps", "duo_length", "duo_window",
                   "max_new_tokens", "ppl_windows", "seed", "model")
SCORE_NEEDLES, EVAL_NEEDLES = NEEDLES[: len(NEEDLES) // 2], NEEDLES[len(NEEDLES) // 2:]


def shared_prefixes(trials) -> list[tuple[list[int], list]]:
    """Trials grouped by the haystack before their needle: `(common token prefix, trials)` per group,
    the prefix at most one token shorter than the shortest prompt of the group (empty for a lone trial)."""
    groups: dict[tuple[int, float], list] = {}  # (length, depth) -> trials
    for t in trials:
        groups.setdefault((t.length, t.depth), []).append(t)
    out = []
    for group in groups.values():
        n = 0 if len(group) == 1 else min(len(t.input_ids) for t in group) - 1
        first = group[0].input_ids
        for t in group[1:]:
            n = next((i for i in range(n) if t.input_ids[i] != first[i]), n)
        out.append((first[:n], group))
    return out


class Experiment:
    """The grid of one `interp compress` run in `out` (see the module docstring); `run()` returns the
    document written to `compress.json`."""

    def __init__(self, model, out: Path, args, progress: bool = True):
        self.m, self.out, self.args, self.progress = model, out, args, progress
        self.parts = Parts(out, "cells")
        self.score_parts = Parts(out, "scores")
        self.on_cell = None  # called with the document so far after every cell
        self.chunk = getattr(args, "prefill_chunk", 512)

    # ---- head scores -------------------------------------------------------------------------
    def scores(self, method: str, draw: int = 0) -> torch.Tensor:
        m, a = self.m, self.args
        key = f"{method}-{draw}" if method == "random" else method
        if method == "retrieval":
            def compute():
                trials = build_trials(m.tokenizer,
                                      NiahConfig(lengths=a.score_lengths, depths=(0.1, 0.35, 0.6, 0.85),
                                                              needles=SCORE_NEEDLES), n_ctx=m.adapter.n_ctx)
                s = retrieval_scores(m, trials, batch_size=4, checkpoint=self.out / "scan_trials.jsonl",
                                     progress=self.progress)
                return {"query_heads": s.mean.tolist(), "recalled": len(s.trial_ids), "trials": s.n_trials}
        elif method == "duo":
            def compute():
                cfg = DuoConfig(steps=a.duo_steps, length=a.duo_length, sink=a.sink, window=a.duo_window,
                                seed=a.seed)
                return {"kv_heads": train_gates(m, cfg, progress=self.progress).tolist()}
        elif method == "sink":
            def compute():
                text = read_haystack(NiahConfig().haystack)
                ids = heldout_windows(m.tokenizer, text, max(a.score_lengths), 4)
                return {"query_heads": sink_scores(m, list(ids), sink=a.sink,
                                                   window=min(a.window, ids.shape[1] // 2))
                        .tolist()}
        else:
            def compute():
                scores = random_scores(m.adapter.n_layers(), m.adapter.n_kv_heads, a.seed + draw)
                return {"kv_heads": scores.tolist()}
        saved = self.score_parts.cached(key, compute)
        return torch.tensor(saved.get("query_heads", saved.get("kv_heads")))

    def policy(self, method: str, draw: int, fraction: float) -> KVPolicy:
        policy = select_kv_heads(self.m, self.scores(method, draw), fraction, sink=self.args.sink,
                                 window=self.args.window)
        (self.out / "policies").mkdir(exist_ok=True)
        name = f"{method}{draw if method == 'random' else ''}-f{fraction:g}.tsv"
        policy.save_tsv(self.out / "policies" / name)
        return policy

    # ---- one cell ----------------------------------------------------------------------------
    def cell(self, policy: KVPolicy | None, length: int, trials, heldout) -> dict:
        """Greedy NIAH recall, perplexity, KV bytes, memory and speed of one policy at one length.

        The first trial runs alone (its sampled peak RSS is the cell's memory figure); the others, grouped
        by the haystack before their needle, prefill that prefix once and continue from a copy of its
        cache (the chunked prefill makes this identical to a one-shot prompt pass)."""
        m, n_new = self.m, self.args.max_new_tokens
        recalled, timing, stored = {}, [0.0, 0.0], 0

        def run(t, prefix, shared) -> None:
            nonlocal stored
            out, t_pre, t_dec, cache = self._greedy(t.input_ids[len(prefix):], shared, n_new)
            recalled[t.id] = rouge1_recall(t.needle.answer, m.tokenizer.decode(out)) > RECALL_THRESHOLD
            timing[0], timing[1] = timing[0] + t_pre, timing[1] + t_dec
            stored = max(stored, cache_bytes(cache))

        trim_heap()  # so freed memory of earlier cells does not count as this cell's
        with compress(m, policy) if policy is not None else nullcontext():
            with PeakRSS() as rss:
                run(trials[0], [], None)
            for prefix, group in shared_prefixes(trials[1:]):
                t0 = time.perf_counter()
                ids = torch.tensor([prefix], device=m.device)
                shared = prefill(m, ids, chunk=self.chunk)[1] if prefix else None
                timing[0] += time.perf_counter() - t0
                for t in group:
                    run(t, prefix, shared)
                del shared
            ppl = self._perplexity(heldout)
        prefill_s, decode_s = timing
        hits = [recalled[t.id] for t in trials]
        n_tok = max(len(t.input_ids) for t in trials) + n_new - 1
        full = KVPolicy(torch.ones(m.adapter.n_layers(), m.adapter.n_kv_heads, dtype=torch.bool),
                        head_dim=m.adapter.head_dim, bytes_per_value=next(m.hf.parameters()).element_size())
        kv = (policy or full).kv_bytes(n_tok)
        return {"length": length, "recalled": hits, "accuracy": sum(hits) / len(hits),
                "perplexity": ppl, "kv_bytes": kv, "kv_bytes_full": full.kv_bytes(n_tok),
                "stored_bytes": stored, "rss_start_mb": rss.start_mb, "peak_rss_mb": rss.peak_mb,  # 1 prompt
                "prefill_s": prefill_s / len(trials),
                "decode_tok_s": len(trials) * (n_new - 1) / max(decode_s, 1e-9)}

    @torch.no_grad()
    def _greedy(self, ids: list[int], shared, n_new: int):
        """Prefill `ids` after the `shared` prefix cache (a copy), then `n_new` greedy tokens."""
        m = self.m
        t0 = time.perf_counter()
        logits, cache = prefill(m, torch.tensor([ids], device=m.device), chunk=self.chunk, reuse=shared)
        t1 = time.perf_counter()
        tokens = [int(logits[0].argmax())]
        for _ in range(n_new - 1):
            res = m.hf(input_ids=torch.tensor([[tokens[-1]]], device=m.device), cache=cache, use_cache=True,
                       logits_to_keep=1)
            cache = output_cache(res)
            tokens.append(int(res.logits[0, -1].argmax()))
        return tokens, t1 - t0, time.perf_counter() - t1, cache

    @torch.no_grad()
    def _perplexity(self, windows) -> float:
        """Held-out perplexity, each window fed in prefill chunks (same logits as one pass, less memory)."""
        total, count = 0.0, 0
        for ids in windows:
            ids, cache = ids[None].to(self.m.device), None
            for start in range(0, ids.shape[1] - 1, self.chunk):
                piece, target = ids[:, start:start + self.chunk], ids[0, start + 1:start + self.chunk + 1]
                past = {"cache": cache} if cache is not None else {}
                res = self.m.hf(input_ids=piece, use_cache=True, **past)
                cache = output_cache(res)
                logits = res.logits[0, : len(target)].float()
                total += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
                count += len(target)
        return math.exp(total / count)

    # ---- the grid ----------------------------------------------------------------------------
    def run(self) -> dict:
        m, a = self.m, self.args
        self.check_settings()  # before any work: saved scores depend on the settings too
        runs = [(meth, d) for meth in a.select for d in (range(a.random_draws) if meth == "random" else [0])]
        for meth, d in runs:  # scores first (cached), so cells can start from any of them
            self.scores(meth, d)
        text = read_haystack(HELDOUT_TEXT)
        inputs: dict[int, tuple] = {}  # length -> (evaluation trials, held-out windows), built when needed

        def cell_inputs(length: int) -> tuple:
            if length not in inputs:
                niah = NiahConfig(lengths=[length], depths=a.depths, needles=EVAL_NEEDLES)
                inputs[length] = (build_trials(m.tokenizer, niah, n_ctx=m.adapter.n_ctx),
                                  list(heldout_windows(m.tokenizer, text, length, a.ppl_windows)))
            return inputs[length]

        cells = []
        fractions = [f for f in a.fractions if f < 1]  # fraction 1 is the uncompressed baseline, run first
        todo = [(length, f, meth, d) for length in a.lengths
                for f, meth, d in [(1.0, "full", 0)] + [(f, meth, d) for f in fractions for meth, d in runs]]
        for length, f, meth, d in track(todo, "compress cells", enabled=self.progress, transient=False):
            unit = f"{meth}{d}-f{f:g}-L{length}"
            policy = None if meth == "full" else self.policy(meth, d, f)
            row = self.parts.cached(unit, lambda p=policy, n=length: self.cell(p, n, *cell_inputs(n)))
            cells.append({"method": meth, "draw": d, "fraction": f, **row})
            if self.on_cell is not None:  # finished cells are readable while the grid runs
                self.on_cell(self.document(cells))
        return self.document(cells)

    def check_settings(self) -> None:
        """Refuse to resume cells computed under other settings (which ones may be added is free)."""
        a = vars(self.args)
        mine = {k: a[k] for k in RESULT_SETTINGS if k in a}
        path = self.out / "settings.json"
        if path.exists():
            saved = read_json(path, "settings of the run")
            changed = sorted(k for k in mine if k in saved and saved[k] != mine[k])
            if changed:
                raise InterpError(f"{self.out} holds cells computed with other {', '.join(changed)} "
                                  f"({', '.join(f'{k}={saved[k]}' for k in changed)}); rerun with those "
                                  "settings or choose a new --out.")
        atomic_write_json(path, mine)

    def document(self, cells: list[dict]) -> dict:
        m, a = self.m, self.args
        return {"model": m.name, "config": {k: v for k, v in vars(a).items() if not k.startswith("_")},
                "n_eval_trials": len(a.depths) * len(EVAL_NEEDLES), "cells": cells,
                "overlap": self.overlap(), "summary": summarise(cells, a.lengths)}

    def overlap(self) -> dict:
        """Jaccard overlap of retrieval-selected and duo-selected KV heads per fraction (when both ran)."""
        if not {"retrieval", "duo"} <= set(self.args.select):
            return {}
        r = kv_head_scores(self.scores("retrieval"), self.m.adapter.n_kv_heads)
        g = self.scores("duo")
        out = {}
        for f in self.args.fractions:
            a, b = top_fraction(r, f), top_fraction(g, f)
            out[f"{f:g}"] = (a & b).sum().item() / max(1, (a | b).sum().item())
        return out

    @staticmethod
    def table(doc: dict) -> str:
        lines = ["| method | fraction | length | NIAH acc | ppl | KV bytes / full | peak RSS MB | "
                 "decode tok/s |",
                 "|---|---|---|---|---|---|---|---|"]
        for c in doc["cells"]:
            lines.append(f"| {cell_name(c)} | {c['fraction']:g} | {c['length']} | {c['accuracy']:.2f} | "
                         f"{c['perplexity']:.2f} | {c['kv_bytes'] / c['kv_bytes_full']:.2f} | "
                         f"{c.get('peak_rss_mb', float('nan')):.0f} | {c['decode_tok_s']:.1f} |")
        return "\n".join(lines)

    @staticmethod
    def pivot(doc: dict) -> str:
        """Recalled trials per method (rows) and full-head fraction (columns), one table per length; the
        header row gives the KV bytes / uncompressed of each fraction."""
        out = []
        for length in sorted({c["length"] for c in doc["cells"]}):
            cells = [c for c in doc["cells"] if c["length"] == length]
            fracs = sorted({c["fraction"] for c in cells})
            kv = {c["fraction"]: c["kv_bytes"] / c["kv_bytes_full"] for c in cells}
            out += [f"| {length} tokens | " + " | ".join(f"{f:g} (KV {kv[f]:.2f})" for f in fracs) + " |",
                    "|---" * (len(fracs) + 1) + "|"]
            for name in dict.fromkeys(cell_name(c) for c in cells):
                row = {c["fraction"]: c for c in cells if cell_name(c) == name}
                hits = [f"{sum(row[f]['recalled'])}/{len(row[f]['recalled'])}" if f in row else ""
                        for f in fracs]
                out.append(f"| {name} | " + " | ".join(hits) + " |")
            out.append("")
        return "\n".join(out)


def summarise(cells: list[dict], lengths) -> dict:
    """Smallest fraction with accuracy >= 95% of uncompressed per method and length (random: mean over
    draws); retrieval - random accuracy gap at 25% full heads with a bootstrap CI."""
    out = {"smallest_fraction_95": {}, "gap_at_0.25": {}}
    for length in lengths:
        base = [c for c in cells if c["method"] == "full" and c["length"] == length]
        if not base:
            continue
        target = 0.95 * base[0]["accuracy"]
        methods = sorted({c["method"] for c in cells if c["method"] != "full"})
        for meth in methods:
            rows = [c for c in cells if c["method"] == meth and c["length"] == length]
            fracs = sorted({c["fraction"] for c in rows})
            ok = [f for f in fracs if sum(c["accuracy"] for c in rows if c["fraction"] == f)
                  / len([c for c in rows if c["fraction"] == f]) >= target]
            if rows:  # None: no compressed fraction tried reaches 95% (only the uncompressed model does)
                out["smallest_fraction_95"][f"{meth}@{length}"] = min(ok) if ok else None
        ret = [x for c in cells
               if c["method"] == "retrieval" and c["fraction"] == 0.25 and c["length"] == length
               for x in c["recalled"]]
        rnd = [x for c in cells if c["method"] == "random" and c["fraction"] == 0.25 and c["length"] == length
               for x in c["recalled"]]
        if ret and rnd:
            out["gap_at_0.25"][str(length)] = bootstrap_gap(ret, rnd)
    return out


def bootstrap_gap(a: list[bool], b: list[bool], n: int = 2000, seed: int = 0) -> dict:
    """mean(a) - mean(b) with a 95% bootstrap interval (resampling trials within each group)."""
    g = torch.Generator().manual_seed(seed)
    ta, tb = torch.tensor(a, dtype=torch.float), torch.tensor(b, dtype=torch.float)
    ia = torch.randint(len(a), (n, len(a)), generator=g)
    ib = torch.randint(len(b), (n, len(b)), generator=g)
    d = ta[ia].mean(1) - tb[ib].mean(1)
    lo, hi = torch.quantile(d, torch.tensor([0.025, 0.975])).tolist()
    return {"gap": (ta.mean() - tb.mean()).item(), "ci95": [lo, hi], "n": [len(a), len(b)]}
