"""The Dockerfile cannot be built here (no Docker engine); it is kept consistent with pyproject.toml,
scripts/install_ffcv.sh and the installed torch build by parsing them."""
import json
import re
import shlex
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (requires-python allows it)
    tomllib = pytest.importorskip("tomli")
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from support import ROOT
UBUNTU_PYTHON = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}  # the python3 of each release


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


@pytest.fixture(scope="module")
def docker():
    return instructions((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def runs(docker) -> list[list[str]]:
    return [shlex.split(args) for kind, args in docker if kind == "RUN"]


def apt_packages(docker) -> set[str]:
    pkgs = set()
    for words in runs(docker):
        for i, w in enumerate(words):
            if w == "install" and i > 0 and words[i - 1] == "apt-get":
                for p in words[i + 1:]:
                    if p in ("&&", ";"):
                        break
                    if not p.startswith("-"):
                        pkgs.add(p)
    return pkgs


def test_base_is_a_cuda_runtime_image_of_the_torch_build(docker):
    base = [args for kind, args in docker if kind == "FROM"]
    assert len(base) == 1
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu(\d+\.\d+)", base[0])
    assert m, base[0]
    torch = pytest.importorskip("torch")
    pin = dockerfile_pins(docker)["torch"]
    if torch.__version__.split("+")[0] != pin or torch.version.cuda is None:
        pytest.skip(f"the installed torch {torch.__version__} is not the Dockerfile's {pin} CUDA build")
    assert f"{m.group(1)}.{m.group(2)}" == torch.version.cuda  # the CUDA release torch was built for


def test_the_image_python_is_allowed_by_requires_python(docker, project):
    base = next(args for kind, args in docker if kind == "FROM")
    ubuntu = base.rsplit("ubuntu", 1)[1]
    assert "python3" in apt_packages(docker)
    assert UBUNTU_PYTHON[ubuntu] in SpecifierSet(project["requires-python"])


def dockerfile_pins(docker) -> dict[str, str]:
    return {m.group(1): m.group(2) for words in runs(docker) for w in words
            if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", w))}


def constraint_pins() -> dict[str, str]:
    lines = (ROOT / "constraints" / "cpu-dev.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_no_pin_in_the_dockerfile_disagrees_with_pyproject_or_the_constraints(docker, project):
    ranges = {Requirement(r).name: Requirement(r).specifier for r in project["dependencies"]}
    pins, exact = dockerfile_pins(docker), constraint_pins()
    assert {"torch", "torchvision"} <= set(pins)  # the CUDA build is chosen here, not by pip's resolver
    for name, version in pins.items():
        assert name in ranges and version in ranges[name], (name, version, ranges.get(name))
        assert exact[name] == version, (name, version, exact.get(name))  # the development machine's version


def test_the_project_is_installed_with_its_pinned_dependencies_then_ffcv(docker):
    steps = [(kind, args) for kind, args in docker if kind in ("RUN", "COPY", "WORKDIR")]
    commands = [" ".join(shlex.split(args)) for kind, args in steps if kind == "RUN"]
    # a pip install of the project that resolves its dependencies (no --no-deps): pyproject's pins apply
    assert any(re.search(r"pip install (-e )?\.( |$)", c) and "--no-deps" not in c for c in commands), commands
    copy_all = steps.index(("COPY", ". ."))
    ffcv = [i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "scripts/install_ffcv.sh" in args]
    assert ffcv and ffcv[0] > copy_all  # the script needs the whole tree (pyproject extras, the project)
    assert "/opt/venv" in steps[ffcv[0]][1]  # into the image's venv, the one on PATH
    assert ("ENV", "PATH=/opt/venv/bin:$PATH") in docker


def test_ffcv_build_packages_are_those_of_install_ffcv_sh(docker):
    script = (ROOT / "scripts" / "install_ffcv.sh").read_text()
    listed = set(re.search(r"^pkgs=\(([^)]*)\)", script, re.M).group(1).split())
    assert listed and listed <= apt_packages(docker)
    assert {"build-essential", "python3-dev", "python3-venv"} <= apt_packages(docker)  # FFCV's C extension


def test_numba_threading_layer_and_train_py_entry(docker):
    env = " ".join(args for kind, args in docker if kind == "ENV")
    assert "NUMBA_THREADING_LAYER=workqueue" in env  # FFCV's numba loaders hang with the default layer
    entry = [json.loads(args) for kind, args in docker if kind == "ENTRYPOINT"]
    assert len(entry) == 1 and entry[0][0].startswith("python") and entry[0][1] == "train.py"
    workdir = [args for kind, args in docker if kind == "WORKDIR"][-1]
    assert ("COPY", ". .") in docker and workdir.startswith("/")  # train.py is in the working dir
    assert (ROOT / "train.py").exists()


def test_dockerignore_keeps_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "outputs", "multirun", "wandb"} <= set(ignored)


def test_every_package_directory_exists_when_the_project_is_installed(docker):
    """setuptools refuses an install whose package directory is missing ("package directory 'gsam/analysis' does
    not exist"): the layer that installs the project before `COPY . .` must hold each package of pyproject's
    explicit list, at the folder its package-dir mapping names (gsam.data -> data/)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setup.get("package-dir", {})
    folders = {mapped.get(p, p.replace(".", "/")) for p in setup["packages"]}
    assert {"data", "models"} <= folders  # the top-level folders install under gsam (no top-level name)
    copied, install = set(), None
    for kind, args in docker:
        if kind == "COPY":
            *sources, _dest = shlex.split(args)
            copied |= {str(Path(s).parent) if s.endswith("__init__.py") else s for s in sources}
        if kind == "RUN" and re.search(r"pip install (-e )?\.( |$)", args):
            install = True
            break
    assert install
    assert "." in copied or folders <= copied, sorted(folders - copied)
