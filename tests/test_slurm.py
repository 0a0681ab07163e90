"""The cluster layer on a real single-node Slurm cluster brought up on this machine (scripts/dev/slurm_local.sh):
a sweep through the submitit launcher, a 2-task DDP job without torchrun, and preemption (USR2 through the
launcher, SIGTERM to a DDP job) that requeues and ends with the same weights as an uninterrupted run.
Skipped with the reason where the cluster cannot be started (not root, no Slurm packages and no apt-get)."""
import contextlib
import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gsam.state.checkpoint import load

from support import ROOT
from support.background import job
from support.cli import train_steps, wait_until
from support.nets import assert_same_optimizer_state, assert_same_weights
STEPS = 24  # long enough to be signalled mid-run, short enough for 2 cores
# ++sam.m=16: 2 tasks hold 16 images each, fewer than demo_gsam's perturbation group of 32 (vanilla ignores it).
# eval=default: the final evaluation on val (or minival) only. The demo's stand-ins for V2, R and C (eval=demo) cost
# ~8 s of each job's ~17 s, and no test here reads them: the claims are about the launcher, DDP and requeues.
BASE = ["data.num_workers=0", "data.batch_size=32", "++sam.m=16", "eval=default", "train.progress=false"]
COMMON = [*BASE, f"train.max_steps={STEPS}"]
LAUNCHER = ["hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null", "hydra.launcher.tasks_per_node=1",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=15"]


def _free_port_pair() -> int:
    for _ in range(50):
        port = 20000 + int.from_bytes(os.urandom(2), "little") % 30000
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free consecutive ports")


def _alive(pid: int) -> bool:
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(out) and not out.startswith("Z")


@contextlib.contextmanager
def _one_cluster_per_machine(timeout_s: float = 1200):
    """Two local clusters up at once on one machine (two test runs, or two pytest-xdist workers) ran none of
    their jobs for minutes, each slurmd being node `localhost`: a second cluster waits here until the first is down."""
    with open(Path(os.environ.get("TMPDIR", "/tmp")) / "gsam-slurm-local.lock", "w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test run's local Slurm cluster held {lock.name} for {timeout_s:.0f} s")
                time.sleep(2)
        yield


@contextlib.contextmanager
def _cluster(state: Path):
    """The cluster's environment while it is up, its state in ``state``; down (and checked gone) after."""
    env = {**os.environ, "GSAM_SLURM_DIR": str(state), "GSAM_SLURM_PORT": str(_free_port_pair())}
    up = subprocess.run(["bash", str(ROOT / "scripts" / "dev" / "slurm_local.sh"), "up"], env=env, capture_output=True,
                        text=True, timeout=300)
    if up.returncode == 3:
        pytest.skip(up.stderr.strip().splitlines()[-1])
    pids = [int((state / f).read_text()) for f in ("ctld.bgpid", "slurmd.bgpid") if (state / f).exists()]
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env.update(SLURM_CONF=str(state / "slurm.conf"), PATH=f"{state / 'bin'}:{env['PATH']}",
                   PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # 1 thread: bit-equal runs, 2 jobs on 2 cores
        yield env
    finally:
        down = subprocess.run(["bash", str(ROOT / "scripts" / "dev" / "slurm_local.sh"), "down"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert pids and not any(_alive(p) for p in pids), "slurmctld/slurmd still running after down"


def _wandb_runs(run_dir: Path) -> list[tuple[str, str]]:
    """(run id, group) of every wandb offline run in the dir, read from the run record of its .wandb file
    (a leveldb-style log of protobuf records: 7-byte header, 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a full record, or the last piece of one
                rec = pb.Record()
                rec.ParseFromString(buf)
                buf = b""
                if rec.WhichOneof("record_type") == "run":
                    found.append((rec.run.run_id, rec.run.run_group))
                    break
    return found


def _same_weights(a: Path, b: Path) -> None:
    ca, cb = load(a / "checkpoints" / "last.pt"), load(b / "checkpoints" / "last.pt")
    assert ca["loop"] == cb["loop"] and ca["loop"]["step"] == STEPS
    assert_same_weights(ca["model"], cb["model"])
    assert_same_optimizer_state(ca, cb)


def _job_field(env, job: str, key: str) -> str:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True).stdout
    m = re.search(rf"\b{key}=(\S+)", out)
    return m.group(1) if m else ""


def _wait_for_steps(run_dir: Path, n: int, proc=None, timeout=300) -> None:
    wait_until(lambda: len(train_steps(run_dir)) >= n, f"{n} steps in {run_dir}", timeout, proc)


def _wait_for_state(env, job: str, states=("COMPLETED", "FAILED", "CANCELLED"), timeout=300) -> str:
    return wait_until(lambda: (state := _job_field(env, job, "JobState")) in states and state,
                      f"job {job} in {states}", timeout, interval=0.2)  # each poll is an scontrol call


def _sbatch_ddp(env, out: Path, demo_root: str, *extra: str) -> str:
    """A plain 2-task batch job: `srun python train.py`, the process group from Slurm's variables."""
    script = out.parent / f"{out.name}.sbatch"
    overrides = " ".join(["+experiment=demo_gsam", f"output_dir={out}", f"data.root={demo_root}", *COMMON, *extra])
    script.write_text(f"#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=1\n#SBATCH --open-mode=append\n"
                      f"#SBATCH --output={out.parent / (out.name + '-%j.log')}\n"
                      f"srun {sys.executable} {ROOT / 'train.py'} {overrides}\n")
    return subprocess.run(["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


# The runs behind tests a-e, one function each, returning what its test asserts on. The background job `slurm` starts
# all of them at once in threads and each test waits for its own: Slurm then keeps both cores busy, where one run after
# another left a core idle during each launcher's start-up and 1-task job, and both idle while a requeued job waits
# out its BeginTime (cred_expire + 1 s, >= 6 s). Every run has its own folder and job, 1 thread per process, so its
# results (and the bit-equal weights the preemption tests compare) do not depend on what runs beside it.
_RUNS_OF: dict[str, tuple[str, ...]] = {}  # test name -> the runs it reads


def _reads(*runs: str):
    def register(test):
        _RUNS_OF[test.__name__] = runs
        return test
    return register


def _run_sweep(env, demo_root, folder: Path):
    """(a) 2-point sweep (the two clean demo experiments: a glob that leaves out demo_noisy_*) through the
    launcher; its GSAM point is the uninterrupted reference of the USR2 test."""
    d = folder / "s"
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "scripts/sweep.py", "+experiment=glob(demo_*,exclude=demo_noisy_*)", f"data.root={demo_root}",
           *COMMON,
           "logger.wandb.mode=offline", f"sweep={name}", f"hydra.sweep.dir={d}", *LAUNCHER]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return d, name, time.time() - t0


def _run_ddp_straight(env, demo_root, folder: Path):
    """(b) an uninterrupted 2-task job; also the reference of the SIGTERM test."""
    out = folder / "straight"
    t0 = time.time()
    job = _sbatch_ddp(env, out, demo_root, "logger.wandb.mode=disabled")
    return out, _wait_for_state(env, job), time.time() - t0


def _run_usr2(env, demo_root, cwd: Path):
    """(c1) USR2, as Slurm sends it before the time limit, to the job of a 1-point sweep through the launcher."""
    cmd = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "+experiment=demo_gsam", f"data.root={demo_root}",
           *COMMON, "logger.wandb.mode=offline", *LAUNCHER]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run, = wait_until(lambda: list(cwd.glob("multirun/*/0_demo_gsam")), "run dir of the sweep", proc=proc)
        d = run.parent
        _wait_for_steps(run, 3, proc)
        job, = [p.name for p in (d / ".submitit").iterdir() if p.name.isdigit()]
        # what Slurm does --signal_delay_s before the time limit (sbatch --signal=USR2@...)
        subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, run, job, time.time() - t0


def _run_sigterm(env, demo_root, folder: Path):
    """(c2) SIGTERM, as a preemption sends it, to a 2-task job."""
    out = folder / "preempted"
    t0 = time.time()
    job = _sbatch_ddp(env, out, demo_root, "logger.wandb.mode=offline")
    _wait_for_steps(out, 3)
    subprocess.run(["scancel", "--signal=TERM", job], env=env, check=True)  # as a preemption does
    return out, job, _wait_for_state(env, job), time.time() - t0


def _run_cancel(env, demo_root, folder: Path):
    """(d) scancel of a running 1-task job."""
    out = folder / "run"
    script = out.parent / "run.sbatch"
    overrides = " ".join(["+experiment=demo_gsam", f"output_dir={out}", f"data.root={demo_root}", *COMMON,
                          "logger.wandb.mode=disabled"])
    script.write_text(f"#!/bin/bash\n#SBATCH --cpus-per-task=1\n#SBATCH --output={out.parent / 'run.log'}\n"
                      f"srun {sys.executable} {ROOT / 'train.py'} {overrides}\n")
    job = subprocess.run(["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    _wait_for_steps(out, 3)
    subprocess.run(["scancel", job], env=env, check=True)
    return out, job, _wait_for_state(env, job)


def _run_search(env, demo_root, folder: Path):
    """(e) App. B.1's alpha stage (search=gsam_alpha) at demo size through scripts/sweep.py, then select_best.py.
    2 points of its grid: a search stage of 2 runs still has a winner to name, and 2 jobs fit the 2 cores at once."""
    from gsam.data.demo import write_demo_dataset

    root = write_demo_dataset(folder / "data", minival=True)  # written once, before the jobs read it
    d = folder / "search"
    cmd = [sys.executable, "scripts/sweep.py", "search=gsam_alpha", "model=demo", "grid=0.1,0.3",  # 2 of App. B.1's
           f"data.root={root}", "data.write_minival=true", *BASE, "train.max_steps=4",
           "logger.wandb.mode=disabled", f"hydra.sweep.dir={d}", *LAUNCHER]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = sorted(d.glob("*_demo_gsam"))
    sel = subprocess.run([sys.executable, "scripts/select_best.py", *map(str, runs)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    return runs, sel


_RUN = {"sweep": _run_sweep, "ddp_straight": _run_ddp_straight, "usr2": _run_usr2, "sigterm": _run_sigterm,
        "cancel": _run_cancel, "search": _run_search}
_FOLDER = {"sweep": "sweep", "ddp_straight": "ddp", "usr2": "preempt", "sigterm": "ddp", "cancel": "cancel",
           "search": "search"}  # the SIGTERM run beside its reference, as before


@job("slurm", demo=True)
def _slurm_run(folder: Path, demo_root: str, lane):
    """The cluster up (one per machine), then the runs that the selected tests of this module read (so `-k test_d`
    starts only the cancel job), all at once: (the cluster's environment, {run name: its Future, done}, a function
    that takes the cluster down). The cluster stays up for the tests, which ask it about their jobs."""
    here = [item for item in lane.items if item.path.name == Path(__file__).name]
    wanted = [name for name in _RUN if any(name in _RUNS_OF.get(item.originalname, ()) for item in here)]
    stack = contextlib.ExitStack()
    lane.on_close(stack.close)  # down at the session's end if the module's fixture never ran
    try:
        stack.enter_context(_one_cluster_per_machine())
        (folder / "slurm").mkdir()
        env = stack.enter_context(_cluster(folder / "slurm"))
    except BaseException:
        stack.close()
        raise
    folders = {f: folder / f for f in {_FOLDER[name] for name in wanted}}
    for f in folders.values():
        f.mkdir()
    with ThreadPoolExecutor(max_workers=len(_RUN)) as pool:
        futures = {name: pool.submit(_RUN[name], env, demo_root, folders[_FOLDER[name]]) for name in wanted}
    return env, futures, stack.close


@pytest.fixture(scope="module")
def slurm(background):
    """The background job's cluster and runs; the cluster goes down when the module's tests are done."""
    env, futures, down = background.result("slurm")
    yield env, futures
    down()


@pytest.fixture(scope="module")
def cluster(slurm):
    return slurm[0]


@pytest.fixture(scope="module")
def slurm_runs(slurm):
    """{run name: Future}: each test calls .result() on its own run and so fails on its own error."""
    return slurm[1]


@pytest.mark.slow
@_reads("sweep")
def test_a_sweep_of_two_experiments_through_the_submitit_launcher(slurm_runs):
    d, name, seconds = slurm_runs["sweep"].result()
    print(f"2-point sweep: {seconds:.0f} s")
    runs = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert runs == ["0_demo_gsam", "1_demo_vanilla"]  # one dir per job
    ids = set()
    for run in runs:
        res = json.loads((d / run / "results.json").read_text())
        assert res["step"] == STEPS and res["results"]["val"]["images"] == 355
        assert train_steps(d / run) == list(range(1, STEPS + 1))
        (run_id, group), = _wandb_runs(d / run)
        assert group == name  # the sweep's wandb group
        ids.add(run_id)
    assert len(ids) == 2
    # the launcher brought each job's return value (val top-1) back from Slurm: <array>_<index>/..._result.pkl
    import pickle

    for run in runs:
        index = run.split("_")[0]
        pkl, = d.glob(f".submitit/*_{index}/*_{index}_0_result.pkl")
        status, job_return = pickle.loads(pkl.read_bytes())
        assert status == "success"
        top1 = json.loads((d / run / "results.json").read_text())["results"]["val"]["top1"]
        assert job_return.return_value == pytest.approx(top1)


@pytest.mark.slow
@_reads("ddp_straight")
def test_b_two_task_ddp_job_without_torchrun(slurm_runs):
    out, state, seconds = slurm_runs["ddp_straight"].result()
    print(f"2-task DDP job: {seconds:.0f} s")
    log = next(out.parent.glob(f"{out.name}-*.log")).read_text()
    assert state == "COMPLETED", log[-3000:]
    assert "2 process(es) on cpu, batch 32 = 2 x 1 x 16" in log, log[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["step"] == STEPS and res["results"]["val"]["images"] == 355  # each val image once over 2 ranks
    assert len(load(out / "checkpoints" / "last.pt")["rng"]) == 2


@pytest.mark.slow
@_reads("usr2", "sweep")
def test_c1_usr2_through_the_launcher_requeues_and_ends_with_the_same_weights(cluster, slurm_runs):
    """With the default sweep name (the launch time) and dir (multirun/<sweep> under the submit dir): the
    requeued job must find the same dir and wandb group although it re-composes its config."""
    returncode, out, run, job, seconds = slurm_runs["usr2"].result()
    reference, _, _ = slurm_runs["sweep"].result()
    d = run.parent
    assert returncode == 0, out[-3000:]
    print(f"USR2 + requeue through the launcher: {seconds:.0f} s")
    log = (d / ".submitit" / job / f"{job}_0_log.out").read_text()
    stopped = re.search(r"SIGUSR2: stopped after step (\d+), checkpoint written; requeued Slurm job", log)
    assert stopped, log[-3000:]
    k = int(stopped.group(1))
    assert 3 <= k < STEPS and f"resumed at step {k}" in log
    assert _job_field(cluster, job, "Restarts") == "1"
    assert train_steps(run) == list(range(1, STEPS + 1))  # no step lost, none done twice
    _same_weights(run, reference / "0_demo_gsam")
    assert list(d.parent.iterdir()) == [d]  # the requeued attempt made no second sweep dir
    wandb_runs = _wandb_runs(run)  # one offline run per attempt, both the same wandb run in the sweep's group
    assert len(wandb_runs) == 2 and len(set(wandb_runs)) == 1
    assert wandb_runs[0] == (load(run / "checkpoints" / "last.pt")["wandb_id"], d.name)


@pytest.mark.slow
@_reads("sigterm", "ddp_straight")
def test_c2_sigterm_to_a_ddp_job_requeues_and_ends_with_the_same_weights(cluster, slurm_runs):
    straight, state, _ = slurm_runs["ddp_straight"].result()
    assert state == "COMPLETED"
    out, job, final_state, seconds = slurm_runs["sigterm"].result()
    assert final_state == "COMPLETED"
    print(f"SIGTERM + requeue of a 2-task job: {seconds:.0f} s")
    log = next(out.parent.glob(f"{out.name}-*.log")).read_text()
    stopped = re.search(r"SIGTERM: stopped after step (\d+), checkpoint written; requeued Slurm job", log)
    assert stopped, log[-3000:]
    k = int(stopped.group(1))
    assert 3 <= k < STEPS and f"resumed at step {k}" in log
    assert _job_field(cluster, job, "Restarts") == "1"
    assert train_steps(out) == list(range(1, STEPS + 1))
    _same_weights(out, straight)
    ids = {run_id for run_id, _ in _wandb_runs(out)}
    assert ids == {load(out / "checkpoints" / "last.pt")["wandb_id"]}


@pytest.mark.slow
@_reads("cancel")
def test_d_scancel_writes_the_checkpoint_and_does_not_requeue(cluster, slurm_runs):
    """A cancelled job must stay cancelled: its SIGTERM still stops the run at a step boundary with last.pt
    written, but the job (COMPLETING to scontrol) is not requeued."""
    out, job, state = slurm_runs["cancel"].result()
    assert state == "CANCELLED"
    log_file = out.parent / "run.log"  # the step's output is flushed as it ends, after the job's state changed
    log = wait_until(lambda: "not requeued" in (text := log_file.read_text()) and text, "stop message in run.log",
                     timeout=60)
    stopped = re.search(r"SIGTERM: stopped after step (\d+), checkpoint written; Slurm job \d+ is COMPLETING", log)
    assert stopped, log[-3000:]
    assert _job_field(cluster, job, "Restarts") == "0"
    assert load(out / "checkpoints" / "last.pt")["loop"]["step"] == int(stopped.group(1)) < STEPS
    assert train_steps(out) == list(range(1, int(stopped.group(1)) + 1))


@pytest.mark.slow
@_reads("search")
def test_e_a_search_stage_on_slurm_then_select_best_prints_the_winner(slurm_runs):
    """App. B.1's alpha stage (search=gsam_alpha) at demo size through scripts/sweep.py on the real cluster: 2
    jobs, each evaluated on minival; select_best.py reads the finished runs and names the best alpha."""
    runs, sel = slurm_runs["search"].result()
    assert len(runs) == 2 and all((r / "results.json").exists() for r in runs)
    assert sel.returncode == 0, sel.stderr
    print(sel.stdout)  # the table and the winner, in the test's output
    rows = [l for l in sel.stdout.splitlines() if l.startswith("| demo_vit | gsam |")]
    assert sorted(r.split("|")[3].strip() for r in rows) == ["0.1", "0.3"]  # the two alphas
    best = max(rows, key=lambda r: float(r.split("|")[4]))
    assert "**best**" in best and f"demo_vit gsam: sam.alpha={best.split('|')[3].strip()}" in sel.stdout


def test_up_without_root_is_the_skip_reason(tmp_path):
    """What the cluster fixture turns into a skip: exit status 3 and the reason, nothing started."""
    if os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs root to drop to an unprivileged user")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash",
                          str(ROOT / "scripts" / "dev" / "slurm_local.sh"), "up"], capture_output=True, text=True,
                         env={**os.environ, "GSAM_SLURM_DIR": str(tmp_path / "s")}, timeout=60)
    assert out.returncode == 3
    assert out.stderr.strip() == "slurm_local: cannot start a cluster here: not root (munged and slurmd need root)"
    assert not (tmp_path / "s").exists()
