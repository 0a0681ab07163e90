"""A non-numeric or non-finite value of a numeric key is one line naming the key, exit status 2."""
import pytest

from support.inproc import run_main


@pytest.mark.slow
@pytest.mark.parametrize("override,key", [("sam.alpha=abc", "sam.alpha"), ("optimizer.lr=fast", "optimizer.lr"),
                                          ("optimizer.lr=inf", "optimizer.lr")])
def test_a_bad_number_is_one_line_naming_the_key(tmp_path, demo_root, override, key):
    done = run_main("train.py", tmp_path, demo_root, override, "train.max_steps=1")
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {key}=") and "finite number" in line
    assert not (tmp_path / "checkpoints").exists()
