"""The GPU acceptance kit's CPU rehearsal: ``scripts/gpu_check.sh --device cpu --tiny`` under Python 3.12 with
torch 2.11 (the venv of ``scripts/gpu/gpu_rehearsal_env.sh``, a stand-in for the GPU machine's image) and the bundle
of ``scripts/gpu/gpu_bundle.sh`` installed the way the GPU machine installs it (--no-index --target), so the kit cannot
rot between GPU sessions. ``scripts/setup.sh`` prepares both wherever a Python 3.12 exists.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from support import ROOT
from support.background import job

# the kit's parts in its own order (scripts/gpu/gpu_check_parts.py's PARTS, read without importing the kit)
PARTS = re.findall(r'^    "(\w+)": Part\(', (ROOT / "scripts" / "gpu" / "gpu_check_parts.py").read_text(), re.M)
# the rehearsal's first half (the env, the two trainings and benchmarks on betons, compile); the second half is
# the data and every other part, so that a part added to the kit runs there: about 55 s of parts each
FIRST_HALF = {"env", "data", "vit_b32_gsam", "resnet50_xsam", "bench_vit_b32", "bench_resnet50", "mixer_b16_sam_compile"}


def _python312_exists() -> bool:
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "find_python312.sh")], capture_output=True).returncode == 0


def _rehearsal_python() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu" / "gpu_rehearsal_env.sh"), "--path"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return Path(out) / "bin" / "python"


@job("rehearsal")
def _rehearsal_run(tmp, _demo, _lane):
    if not _python312_exists():
        pytest.skip("no Python 3.12 on this machine (the GPU machine's version): the kit's rehearsal needs one")
    python = _rehearsal_python()
    if not python.exists() or not list((ROOT / ".gpu_bundle" / "wheels").glob("ffcv-*.whl")):
        pytest.fail("the rehearsal is not prepared: run bash scripts/setup.sh (it builds the rehearsal venv and "
                    ".gpu_bundle)")
    # the bundle installed once per machine beside the rehearsal venv, reinstalled by gpu_check.sh only when the
    # bundle's wheels change (its key): the install is what the GPU machine does once per session, not the rehearsal
    site = python.parent.parent.with_name(python.parent.parent.name + "-site")
    env = {**os.environ, "PYTHON": str(python), "GSAM_SITE": str(site)}
    env.pop("PYTHONPATH", None)
    # bytecode kept (the bundle is installed --no-compile, as on the GPU machine): each of the kit's processes
    # would otherwise compile the bundle's and the repository's sources again, about 2 s a process on 2 cores
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Two kits at once, each on its half of the parts (--only, each half in the kit's own order, both writing their
    # own betons): their worker runs one thread each, so on 2 cores the halves overlap instead of queueing
    halves = {"a": [p for p in PARTS if p in FIRST_HALF], "b": ["data", *(p for p in PARTS if p not in FIRST_HALF)]}
    procs = {h: subprocess.Popen(["bash", "scripts/gpu_check.sh", str(tmp / f"out_{h}"), "--device", "cpu", "--tiny",
                                  "--work", str(tmp / f"work_{h}"), "--only", ",".join(parts)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for h, parts in halves.items()}
    outputs = {h: proc.communicate(timeout=600)[0] for h, proc in procs.items()}
    parts = {}
    for h in halves:
        summary_path = tmp / f"out_{h}" / "summary.json"
        assert summary_path.exists(), outputs[h][-3000:]
        parts.update({p["part"]: p for p in json.loads(summary_path.read_text())["parts"]})
    return {h: proc.returncode for h, proc in procs.items()}, parts, {h: tmp / f"out_{h}" for h in halves}


@pytest.fixture(scope="module")
def rehearsal(background):
    """The two kits' exit statuses, every part's summary, and their output folders."""
    return background.result("rehearsal")


@pytest.mark.slow
def test_every_part_of_the_kit_passes_on_python312_torch211_with_the_bundle(rehearsal):
    returncodes, parts, _ = rehearsal
    assert set(parts) == set(PARTS)  # every part of the kit ran in one half or the other
    failed = {name: p["error"] for name, p in parts.items() if not p["ok"]}
    assert not failed, "\n\n".join(f"{k}:\n{v}" for k, v in failed.items())
    assert returncodes == {"a": 0, "b": 0}
    env = parts["env"]["figures"]
    assert env["python"].startswith("3.12.") and env["torch"].startswith("2.11.")
    assert env["ffcv"] == "1.0.2" and env["hydra-core"] and env["wandb"]  # from the bundle: the image's venv has none


@pytest.mark.slow  # the rehearsal fixture is minutes of the kit's runs
def test_the_kit_measures_what_its_parts_claim(rehearsal):
    _, parts, outs = rehearsal
    figs = {name: p["figures"] for name, p in parts.items()}
    for run in ("vit_b32_gsam", "resnet50_xsam", "mixer_b16_sam_compile", "vit_s16_gsam_fp16", "groups"):
        assert figs[run]["steps"] == 3 and figs[run]["losses_finite"], (run, figs[run])
        assert 0 <= figs[run]["data_wait"] < 1 and figs[run]["img_s"] > 0
    assert figs["resnet50_xsam"]["searches"] == 1 and figs["resnet50_xsam"]["channels_last"]  # epoch 0's step 1
    assert figs["groups"]["max_device_batch"] == 2  # groups of 4 images in micro-batches of 2
    assert figs["mixer_b16_sam_compile"]["overrides"] == ["train.compile=aot_eager"]
    kr = figs["kill_resume"]
    assert kr["resumed_at_step"] < kr["killed_at_step"] and kr["final_step"] == 8  # --tiny: 8 steps, a checkpoint every 2
    assert figs["evaluate"]["val_top1"] == figs["evaluate"]["val_top1_at_end_of_training"]
    for model in ("vit_b32", "resnet50"):
        b = figs[f"bench_{model}"]
        assert b["SAM/vanilla"] > 0 and 0 <= b["data_wait_GSAM"] < 1
        assert b["m"] == 2 and b["SAM/SAM one group"] > 0  # perturbation groups, against one group
        assert "## GSAM" in (outs["a"] / f"profile_{model}.txt").read_text()
    md = (outs["b"] / "summary.md").read_text()
    assert "PASSED" in md and "| kill_resume | ok |" in md
