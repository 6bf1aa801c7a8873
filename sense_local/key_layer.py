"""Which block's states key SENSE's search: the default depth and the --key-layer values."""
from __future__ import annotations

from .key_tap import taps_available

# Where SENSE's keys are read by default, as a fraction of the model's blocks (None: the final norm).
# Measured on Qwen2.5-Coder-1.5B (benchmarks/key_layer_bench.py, bench --key-layer): block 8 of 28
# costs 0.28x of a prefill to index (the final norm 0.99x), with SENSE's quick-suite tau unchanged
# (grounded 5.52 vs 5.53, docqa-rag 2.11 vs 2.11); next-token agreement of neighbours is lower
# (0.53 vs 0.64), but the drafts built on them are not.
KEY_DEPTH = 0.3


def default_key_layer(n_layer: int) -> int | None:
    """The block whose input states key SENSE's search by default (None: the final norm, also where
    graph tensors cannot be read)."""
    if KEY_DEPTH is None or n_layer < 2 or not taps_available():
        return None
    return min(max(1, round(KEY_DEPTH * n_layer)), n_layer - 1)


def parse_key_layer(text: str) -> int | None | str:
    """A --key-layer value: a block number, "final", or "default"."""
    if text in ("final", "default"):
        return None if text == "final" else "default"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"a block number, final or default (got {text!r})") from None
