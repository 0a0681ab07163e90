import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers module

import pytest


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The embedded demo data (data/demo.py), written once per test session."""
    from gsam.data.demo import write_demo_dataset

    return str(write_demo_dataset(tmp_path_factory.mktemp("demo_data")))
