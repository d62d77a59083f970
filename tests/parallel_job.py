"""A small data-parallel job for tests/test_parallel.py: `torchrun --nproc-per-node 2 parallel_job.py OUT`."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_model  # noqa: E402

import interp  # noqa: E402
from interp.capture.stats import Stats  # noqa: E402
from interp.parallel import init, map_batches  # noqa: E402

LENGTHS = (7, 4, 9, 5, 8)


def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(1, 96, (n,), generator=g) for n in LENGTHS]


def run() -> list:
    model = tiny_model("llama")

    def one_batch(batch):
        width = max(len(p) for p in batch)
        ids = torch.stack([torch.nn.functional.pad(p, (width - len(p), 0)) for p in batch])
        mask = torch.stack([torch.arange(width) >= width - len(p) for p in batch]).long()
        st = Stats(top_k=2)
        with interp.capture(model, probes=[st]):
            model(input_ids=ids, attention_mask=mask)
        return {layer: (st.rows[layer], st.columns[layer]) for layer in st.rows}

    return map_batches(one_batch, prompts(), batch_size=2, progress=False)


if __name__ == "__main__":
    rank, world = init()
    result = run()
    if rank == 0:
        torch.save({"world": world, "result": result}, sys.argv[1])
