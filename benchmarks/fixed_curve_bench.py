"""`sense-local bench` with drafting that depends on tokens alone, so two code versions can be compared
token for token (issue 34's "tokens identical to before"): every reply sizes its drafts by the cost
curve already on disk for the model, which bench does not measure again, no decode timing corrects it
and nothing learned is kept.

Why it is needed: bench measures the curve at the start of every run and each reply corrects it by
its decodes' timings (speculative/cost.py), so draft lengths, and with them the batch shapes whose
arithmetic decides near-ties, follow the machine's load. Two runs of the same code on the 135M
(grounded and code kinds) wrote different tokens for 9 of 32 (task, method) pairs that way, all at
near-ties; with this wrapper, 12 of 12 and 80 of 80 were identical.

    python -m benchmarks.fixed_curve_bench --model test --suite quick --json before.json
    (run the other version the same way, with PYTHONPATH at its checkout; the curve file must exist:
    run `sense-local bench` once first)
    python -m benchmarks.compare_outputs before.json after.json
"""
from __future__ import annotations

import sys

from sense_local.errors import SenseError
from sense_local.speculative import cost


def fix_the_curve() -> None:
    """The saved curve, read instead of measured; decode timings ignored (nothing learned)."""
    def saved(engine, **_):
        found = cost._read(cost._cache_file(engine))
        if found is None:
            raise SenseError("no cost curve saved for this model yet: run `sense-local bench` once first")
        return found[0]

    cost.measure_cost_curve = saved
    cost.OnlineCost.observe = lambda self, n_tokens, seconds: None


def main(argv=None) -> int:
    fix_the_curve()
    from sense_local.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
