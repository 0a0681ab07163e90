"""scripts/ by purpose: its top level holds only what a user is told to run (the README, docs/), the GPU kit's
parts, the benchmarks, the studies and the maintainers' tools each in their folder; and no file of the project
names a script path that does not exist, so a moved script cannot leave a README line, an error message, a
subprocess call or a test pointing at its old place."""
import re
from pathlib import Path

from support import ROOT

SCRIPTS = ROOT / "scripts"
# scripts/'s top level, each with where a user is told to run it
ENTRY_POINTS = {
    "setup.sh": "README: creates .venv (the ImageNet path's first command)",
    "test.sh": "README and .ci/run: the test command",
    "demo.sh": "README: the demo, the first of the two commands",
    "install_ffcv.sh": "docs/data.md's first command and data/ffcv_loaders.py's error when FFCV is missing",
    "write_betons.py": "README: ImageNet to betons, once",
    "make_imagenet_tree.py": "docs/data.md: an ILSVRC-shaped tree to try the data path without ImageNet",
    "sweep.py": "README: Table 1, Table 6 and the searches on Slurm",
    "select_best.py": "docs/recipe.md and cluster.md: a search stage's best point",
    "make_table.py": "README: our runs beside the paper",
    "plot_runs.py": "docs/data.md: the runs' curves and the Table 1 chart (demo.sh runs it too)",
    "compare_runs.py": "demo.sh: the two runs side by side, per evaluation set",
    "convert_released.py": "docs/released.md: the paper's released checkpoints into ours",
    "wandb_dashboard.py": "docs/cluster.md: the Table 1 report on wandb",
    "gpu_check.sh": "README: the GPU kit's one command on the GPU machine (its parts are in gpu/)",
}
FOLDERS = {"gpu": "the GPU kit's parts", "bench": "speed (the standards: bench_*.py)",
           "studies": "analysis and studies (docs/analysis.md)", "dev": "maintainers' tools"}
# where script paths are written for a user or run by code
SCANNED = ["README.md", "Dockerfile", "pyproject.toml", "train.py", "evaluate.py", ".ci", "docs", "tests", "scripts",
           "gsam", "data", "models", "configs", "constraints"]
TEXT = {".py", ".sh", ".md", ".yaml", ".toml", ".txt", ""}
# scripts/<folder>/<name>.py as written in prose, commands and strings; "scripts" / "<folder>" / "<name>.py" as a
# pathlib join; load_script("<folder>/<name>") as the tests load a script. Each gives the path relative to scripts/.
PATTERNS = [(re.compile(r"(?<![\w/.-])scripts/((?:[\w-]+/)*[\w-]+\.(?:py|sh))\b"), lambda g: g),
            (re.compile(r'"scripts"((?:\s*/\s*"[\w.-]+")+)'), lambda g: "/".join(re.findall(r'"([\w.-]+)"', g))),
            (re.compile(r'load_script\("([\w/]+)"\)'), lambda g: f"{g}.py")]


def _listed(path: Path) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    return [f for f in files if f.is_file() and f.suffix in TEXT and "__pycache__" not in f.parts]


def _named(text: str) -> set[str]:
    """The script paths (relative to scripts/) that ``text`` names."""
    return {to_path(m[1]) for pattern, to_path in PATTERNS for m in pattern.finditer(text)}


def test_the_top_level_of_scripts_holds_only_entry_points_and_the_folders():
    entries = [p for p in SCRIPTS.iterdir() if p.name != "__pycache__"]
    assert sorted(p.name for p in entries if p.is_file()) == sorted(ENTRY_POINTS)
    assert sorted(p.name for p in entries if p.is_dir()) == sorted(FOLDERS)
    assert all(p.name.startswith("bench_") for p in (SCRIPTS / "bench").glob("*.py"))


def test_every_script_path_the_project_names_exists():
    missing = {}
    for f in (f for name in SCANNED for f in _listed(ROOT / name)):
        for rel in _named(f.read_text(errors="replace")):
            if not (SCRIPTS / rel).exists():
                missing.setdefault(f"scripts/{rel}", []).append(str(f.relative_to(ROOT)))
    assert not missing, "\n".join(f"{path}: named in {', '.join(where)}" for path, where in sorted(missing.items()))


def test_the_path_patterns_find_each_way_a_script_is_named():
    text = ('run `bash scripts/gpu/gpu_bundle.sh`; ROOT / "scripts" / "bench" / "bench_train.py"; '
            'load_script("studies/powered_study"); tree/scripts/x.py and scripts/studies/*.py are not paths of ours')
    assert _named(text) == {"gpu/gpu_bundle.sh", "bench/bench_train.py", "studies/powered_study.py"}
