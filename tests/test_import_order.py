"""usearch's static libstdc++ must not break model loading, whatever order our modules load in."""
from __future__ import annotations

import subprocess
import sys

import pytest

LOAD = "import sense_local as sl; e = sl.Engine(sl.resolve_model(), n_ctx=256); print(len(e.tokenize('ok')))"


@pytest.mark.parametrize(
    "prelude",
    [
        "import sense_local.native as n; n.load_usearch()",  # our usearch gateway first
        "import sense_local.speculative.cost; import usearch.index",  # a submodule, then usearch
        "import sense_local",  # usearch never loaded
    ],
)
def test_model_loads_in_a_fresh_interpreter(prelude, model_path):
    proc = subprocess.run([sys.executable, "-c", f"{prelude}\n{LOAD}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 1


def test_usearch_imported_before_us_gives_a_clear_error(model_path):
    code = f"import usearch.index\n{LOAD}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:  # a usearch build without the static runtime: nothing to explain
        return
    assert "import sense_local first" in proc.stderr
