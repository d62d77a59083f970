"""`scan.json`, version 1: what a scan found, with everything needed to trust and redo it.

    {
      "schema": "interp.scan", "schema_version": 1, "interp_version": "0.1.0",
      "status": "running" | "complete",
      "model": {"name", "class", "family", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_model",
                "parameters", "dtype", "device", "fingerprint"},
      "settings": {"analyses": [...], "device", "dtype", "max_memory", "config": {analysis: {...}}},
      "analyses": {name: {"primary": metric, "summary": {...},
                          "metrics": {metric: {"scores": [[layer][head]], "role", "description",
                                               "columns", "threshold"}}}},
      "examples": {"prompt": str, "tokens": [str], "heads": {"L.H": {"pattern": [[q][k]],
                   "rows": [int], "cols": [int]}}}
    }

Scores are plain floats, `scores[layer][head]`; `columns` names the second axis when it is not
heads. `fingerprint` hashes a sample of the weights, so `--resume` refuses to mix models. The
file holds no timestamps: a resumed scan writes the same bytes as an uninterrupted one (wall
times go to `timings.json`). See docs/scan.md.
"""

import hashlib

import torch

from interp.scan.store import ScanFileError
from interp.version import __version__

SCHEMA = "interp.scan"
SCHEMA_VERSION = 1


def fingerprint(hf: torch.nn.Module, n_tensors: int = 8, n_values: int = 4096) -> str:
    """sha256 over parameter names, shapes and a sample of values of `n_tensors` spread-out parameters
    (those on the CPU or a GPU: weights accelerate offloaded to disk sit on the meta device)."""
    params = [(n, p) for n, p in hf.named_parameters() if p.device.type != "meta"]
    h = hashlib.sha256()
    step = max(1, len(params) // n_tensors)
    for name, p in params[::step]:
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:n_values].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(model) -> dict:
    s = model.summary()
    return {"name": s["name"], "class": s["class"], "family": s["family"],
            "n_layers": model.adapter.n_layers(), "n_heads": s["n_heads"], "n_kv_heads": s["n_kv_heads"],
            "head_dim": s["head_dim"], "d_model": s["d_model"], "parameters": s["parameters"],
            "dtype": s["dtype"], "device": s["device"], "fingerprint": fingerprint(model.hf)}


def new_document(model: dict, settings: dict) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "interp_version": __version__,
            "status": "running", "model": model, "settings": settings, "analyses": {}, "examples": None}


def validate(doc, path: str = "scan.json") -> dict:
    """Check the envelope of a scan document; `ScanFileError` names what is wrong."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ScanFileError(f"{path} is not an interp scan file (no \"schema\": \"{SCHEMA}\"); it was left "
                            f"untouched. Point --out at a scan folder or a new folder.")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ScanFileError(f"{path} has schema version {doc.get('schema_version')!r}; this interp reads "
                            f"version {SCHEMA_VERSION}. Rerun the scan into a new --out folder.")
    for key, kind in (("model", dict), ("settings", dict), ("analyses", dict), ("status", str)):
        if not isinstance(doc.get(key), kind):
            raise ScanFileError(f"{path} is corrupt: field {key!r} is missing or not a {kind.__name__}. It "
                                f"was left untouched; move it away and rerun without --resume.")
    for name, result in doc["analyses"].items():
        metrics = result.get("metrics") if isinstance(result, dict) else None
        if not isinstance(metrics, dict) or not all(isinstance(m.get("scores"), list)
                                                    for m in metrics.values()):
            raise ScanFileError(f"{path} is corrupt: analysis {name!r} has no per-head scores. It was left "
                                f"untouched; move it away and rerun without --resume.")
    return doc
