"""The package switches NumPy's huge-page advice off (native.py), in a process of its own: an
import elsewhere in the test session would have done it already."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_importing_the_package_gives_new_arrays_ordinary_pages():
    probe = ("import numpy as np; before = np._core.multiarray._set_madvise_hugepage(True); "
             "np._core.multiarray._set_madvise_hugepage(before); import sense_local; "
             "print(before, np._core.multiarray._set_madvise_hugepage(True))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"NUMPY_MADVISE_HUGEPAGE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]  # advised before the import, not after it
