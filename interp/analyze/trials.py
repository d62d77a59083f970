"""Needle-in-a-haystack trials run greedily, optionally scored per head (the retrieval-head probe).

`run_trials` generates for many trials: each prompt prefilled alone over the haystack it shares
with the previous trial, decoding batched (`interp.analyze.decoding`), or `generate` on left-padded
batches where that cannot apply. With `score=True`, `DecodeArgmax` keeps, per forward pass, only the
argmax key of each head's newest query row, and `copy_hits` turns those into the paper's per-trial
copy score (`interp.analyze.retrieval` aggregates them).

    >>> for batch in run_trials(m, trials, batch_size=8, score=True):   # doctest: +SKIP
    ...     print([(r.id, r.output, r.recall) for r in batch])

Memory: one batch of prompts plus its KV caches; the argmax record is `steps x layer x batch x head`
integers.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyze.decoding import PrefixCache, greedy, supports_prefix_decoding
from interp.capture import AttentionCall, Probe, capture
from interp.capture.context import enclosing_editors
from interp.intervene.ablate import acts_per_pass
from interp.models.model import as_model
from interp.progress import bar as progress_bar
from interp.tasks.niah import Trial, batches, rouge1_recall

RECALL_THRESHOLD = 0.5  # the official code counts trials with ROUGE-1 recall > 50


@dataclass
class DecodeArgmax(Probe):
    """Per forward pass and layer, the argmax key (absolute position) of each head's newest query row.

    `argmax()` stacks them as `[step, layer, batch, head]`. Costs one `batch x head x key` row per
    layer and step. Set `query_rows` (one index per batch row) to read other rows than the last, as
    for right-padded prompts. A single-query pass (a decoding step) takes its output from the same
    fp32 weights (eager math, one read of the keys instead of SDPA's plus ours); longer passes keep
    SDPA's output. Edits by other probes are seen either way.
    """

    stack: str | None = None
    query_rows: Int[Tensor, " batch"] | None = None
    _steps: dict = field(default_factory=dict, repr=False)
    _n_layers: int = 0
    _weights: tuple | None = field(default=None, repr=False)

    def begin(self, model) -> None:
        self.stack = self.stack or model.adapter.main_stack
        self._n_layers = model.adapter.n_layers(self.stack)
        self._steps = {}
        self._weights = None

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack

    def attention_output(self, call: AttentionCall):
        if call.q_len != 1 or call.sinks is not None:
            return None
        w = call.weights()  # [batch, head, 1, key]
        self._weights = (call, w)
        b, h, _, k = w.shape
        v = call.value
        # query heads grouped under their kv head
        z = torch.matmul(w.to(v.dtype).view(b, v.shape[1], -1, k), v)
        return z.view(b, h, 1, -1).transpose(1, 2)

    def record(self, call: AttentionCall, z) -> None:
        if self._weights is not None and self._weights[0] is call and call.edited is None:
            w = self._weights[1][:, :, 0]
        elif self.query_rows is None or call.q_len == 1:
            w = call.weights(rows=slice(call.q_len - 1, call.q_len))[:, :, 0]  # [batch, head, key], fp32
        else:
            lo, hi = int(self.query_rows.min()), int(self.query_rows.max()) + 1
            w = call.weights(rows=slice(lo, hi))  # [batch, head, row, key]
            w = w[torch.arange(call.batch), :, self.query_rows.to(w.device) - lo]
        self._weights = None
        self._steps.setdefault(call.step, {})[call.layer] = w.argmax(-1) + call.key_offset

    def take(self) -> Int[Tensor, "layer batch head"]:
        """The latest forward pass's argmax keys, removed from the record."""
        layers = self._steps.pop(max(self._steps))
        return torch.stack([layers[l] for l in range(self._n_layers)])

    def argmax(self) -> Int[Tensor, "step layer batch head"]:
        steps = sorted(self._steps)
        return torch.stack([torch.stack([self._steps[s][l] for l in range(self._n_layers)]) for s in steps])


def copy_hits(
    argmax: Int[Tensor, "step layer batch head"],
    sequences: Int[Tensor, "batch pos"],
    prompt_len: int,
    answer_span: Int[Tensor, "batch 2"],
    n_steps: Int[Tensor, " batch"],
) -> Float[Tensor, "batch layer head"]:
    """The paper's per-trial score: sum over valid steps of 1/len(span) where a head's argmax copies.

    Step `s` produced token `sequences[:, prompt_len + s]`; it is valid for a row while `s < n_steps`.
    """
    n_steps_total = argmax.shape[0]
    generated = sequences[:, prompt_len : prompt_len + n_steps_total]  # [batch, step]
    key_tokens = torch.gather(
        sequences[None, None].expand(n_steps_total, argmax.shape[1], -1, -1),
        3,
        argmax.clamp_max(sequences.shape[1] - 1),
    )  # [step, layer, batch, head]
    start, stop = answer_span[:, 0], answer_span[:, 1]
    inside = (argmax >= start[None, None, :, None]) & (argmax < stop[None, None, :, None])
    same = key_tokens == generated.T[:, None, :, None]
    valid = torch.arange(n_steps_total)[:, None] < n_steps[None, :]  # [step, batch]
    hits = (inside & same & valid[:, None, :, None]).sum(0).float()  # [layer, batch, head]
    return (hits / (stop - start).float()[None, :, None]).permute(1, 0, 2)


@dataclass
class TrialResult:
    """One finished trial: what the model answered, its recall, and (for a scan) its per-head scores."""

    id: str
    output: str
    recall: float
    scores: Float[Tensor, "layer head"] | None = None

    @property
    def recalled(self) -> bool:
        return self.recall > RECALL_THRESHOLD

    def to_json(self) -> dict:
        record = {"id": self.id, "output": self.output, "recall": self.recall}
        if self.scores is not None:
            record["scores"] = self.scores.tolist()
        return record


def prefix_order(trials: Sequence[Trial]) -> list[Trial]:
    """Trials ordered for prefix reuse: by their tokens before the needle (descending), then length.

    Trials whose haystacks start alike sit together, deepest needle first, so a trial's text before
    its needle is cached from an earlier trial (`interp.analyze.decoding.PrefixCache`); trials with
    the same text before the needle and the same length follow each other, so they share one prompt
    pass; a longer trial with the same needle at the same place precedes a shorter one, whose whole
    haystack it then holds.
    """
    return sorted(trials, key=lambda t: (t.input_ids[: t.needle_span[0]], t.length, t.id), reverse=True)


def run_trials(
    model,
    trials: Sequence[Trial],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    edits: Sequence[Probe] = (),
    score: bool = False,
    progress: bool | str = True,
    prefix: PrefixCache | None = None,
) -> Iterator[list[TrialResult]]:
    """Generate greedily for `trials`, `batch_size` at a time; yield each batch's results as it finishes.

    `edits` (e.g. head ablations) apply during the whole generation; `score=True` also computes the
    retrieval score of every trial (`TrialResult.scores`). Trials run in `prefix_order`; each prompt
    is prefilled on its own over the previous prompt's cached prefix and decoding is batched
    (`interp.analyze.decoding`); pass one `prefix` to several calls to reuse across them. Models
    whose cache cannot be cut and stacked (sliding windows, hybrids), and edits other than head
    ablations (they may keep state between passes), take `generate` on left-padded batches instead.
    Editors of captures already open around the call (`with interp.calibrate(...): run_trials(...)`)
    apply too and choose the path the same way, so the results equal passing them as `edits`.
    """
    m = as_model(model)
    every = [*edits, *enclosing_editors(m)]
    if not acts_per_pass(every) or not supports_prefix_decoding(m.hf):
        yield from _run_padded(m, trials, batch_size, max_new_tokens, edits, score, progress)
        return
    tok, pad_id, eos = m.tokenizer, _pad_id(m.tokenizer), _eos_ids(m)
    prefix = prefix or PrefixCache()
    order = prefix_order(trials)
    with _progress(progress, len(trials)) as advance:
        for i in range(0, len(order), batch_size):
            group = order[i : i + batch_size]
            steps = _ArgmaxSteps(DecodeArgmax(), len(group)) if score else None
            with capture(m, edits=list(edits), probes=[steps.probe] if steps else []):
                out = greedy(m, [t.input_ids for t in group], max_new_tokens=max_new_tokens, eos=eos,
                             pad_id=pad_id, prefix=prefix, observer=steps)
            seq = out.sequences
            new = seq[:, out.prompt_len :]
            n_steps = _valid_steps(new, eos)
            scores = None
            if steps is not None:
                spans = torch.tensor([t.answer_span for t in group]) + out.pads[:, None]
                scores = copy_hits(steps.argmax(out.pads), seq, out.prompt_len, spans, n_steps)
            advance(len(group))
            yield _results(tok, group, new, n_steps, scores)


@dataclass
class _ArgmaxSteps:
    """Collects `DecodeArgmax` after each pass of `greedy`: the prompt passes (each prompt's own key
    positions), then the batched decoding steps (left-padded key positions)."""

    probe: DecodeArgmax
    n_prompts: int
    prompts: list = field(default_factory=list)
    steps: list = field(default_factory=list)

    def before_pass(self, query_rows: Tensor) -> None:
        self.probe.query_rows = query_rows

    def after_pass(self) -> None:
        in_prompts = sum(p.shape[1] for p in self.prompts) < self.n_prompts
        (self.prompts if in_prompts else self.steps).append(self.probe.take())

    def argmax(self, pads: Int[Tensor, " batch"]) -> Int[Tensor, "step layer batch head"]:
        """All steps in padded key positions (the first step is the prompt passes' last rows)."""
        first = torch.cat(self.prompts, 1) + pads[None, :, None].to(self.prompts[0].device)
        return torch.stack([first, *self.steps]).cpu()


def _run_padded(m, trials, batch_size, max_new_tokens, edits, score, progress) -> Iterator[list[TrialResult]]:
    """The general path: `generate` on left-padded batches (any cache, any editor)."""
    tok, pad_id, eos = m.tokenizer, _pad_id(m.tokenizer), _eos_ids(m)
    with _progress(progress, len(trials)) as advance:
        for group, batch in batches(trials, batch_size, pad_id, device=m.device):
            probe = DecodeArgmax() if score else None
            with capture(m, edits=list(edits), probes=[probe] if probe else []):
                seq = m.hf.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad_id,
                    eos_token_id=sorted(eos),
                )
            prompt_len = batch["input_ids"].shape[1]
            new = seq[:, prompt_len:].cpu()
            n_steps = _valid_steps(new, eos)
            scores = None
            if probe is not None:
                scores = copy_hits(
                    probe.argmax().cpu(), seq.cpu(), prompt_len, batch["answer_span"].cpu(), n_steps
                )
            advance(len(group))
            yield _results(tok, group, new, n_steps, scores)


def _results(
    tok, group: Sequence[Trial], new: Tensor, n_steps: Tensor, scores: Tensor | None
) -> list[TrialResult]:
    results = []
    for row, trial in enumerate(group):
        text = tok.decode(new[row, : n_steps[row]].tolist(), skip_special_tokens=True)
        results.append(TrialResult(trial.id, text, rouge1_recall(trial.needle.answer, text),
                                   None if scores is None else scores[row]))
    return results


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _eos_ids(m) -> set[int]:
    eos = m.hf.generation_config.eos_token_id if m.hf.generation_config is not None else None
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if m.tokenizer.eos_token_id is not None:
        eos.add(m.tokenizer.eos_token_id)
    return eos


def _valid_steps(new: Tensor, eos: set[int]) -> Int[Tensor, " batch"]:
    """Generated tokens before the first end-of-sequence token, per row."""
    is_eos = (
        torch.isin(new, torch.tensor(sorted(eos), dtype=new.dtype))
        if eos
        else torch.zeros_like(new, dtype=bool)
    )
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(new[:, 0], new.shape[1]))
    return first


@contextmanager
def _progress(enabled: bool | str, total: int):
    """`advance(n)` for a bar over trials (`enabled` may be the bar's label); a no-op when disabled."""
    with progress_bar(enabled=bool(enabled)) as display:
        task = display.add_task(enabled if isinstance(enabled, str) else "trials", total=total)
        yield lambda n: display.advance(task, n)


__all__ = ["RECALL_THRESHOLD", "DecodeArgmax", "TrialResult", "copy_hits", "prefix_order", "run_trials"]
