"""pytest marks shared by several test modules (kept out of ``support/__init__``, which worker scripts import)."""
import importlib.util

import pytest

# FFCV found without importing it: the library's ffcv_available() imports it, which compiles numba code, 5 s at the
# collection of every run of the suite (the fast tier's included, where no test reads a beton)
needs_ffcv = pytest.mark.skipif(importlib.util.find_spec("ffcv") is None,
                                reason="FFCV not installed (bash scripts/install_ffcv.sh)")
