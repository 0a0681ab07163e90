"""Code shared by the tests, imported as a package (``from support.nets import mlp``).

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject's [tool.pytest.ini_options]), and a worker
script run as ``python tests/x_worker.py`` gets its own folder as ``sys.path[0]``: both find this package without
any path manipulation in the code. Test modules import from here, never from one another or from a worker
script.
"""
from pathlib import Path

from gsam.evaluation.tables import table1_models

ROOT = Path(__file__).resolve().parents[2]  # the repository: train.py, evaluate.py, configs/, scripts/
# the models of Table 1, by the names of configs/model/*.yaml (gsam.evaluation.tables lists them; test_reports checks
# them against the paper's Table 1)
MODELS = table1_models()
# the tiny study and frontier (tests/conftest.py's tiny_study): one epoch of 2 steps per run, the sharpness monitor
# at its cheapest that still runs every part of it
TINY_STUDY_OVERRIDES = ["schedule.epochs=1", "data.batch_size=512", "analysis.batches=1", "analysis.power_iters=1"]


def load_script(name: str):
    """scripts/<name>.py as a module, by its path (``name`` relative to scripts/, e.g. "studies/powered_study"):
    the scripts are not a package, and putting scripts/ on sys.path would let their names shadow installed modules
    for the rest of the session."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"scripts_{name.replace('/', '_')}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
