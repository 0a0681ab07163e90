"""support.background's lane, on stand-in jobs: started jobs run one after another on one thread in their order,
a failure (a failed assertion, pytest.skip) reaches the fixture that asks, a job that was not started runs in the
foreground, and the session's end drops what has not begun and runs the cleanups."""
import threading
import time

import pytest

from support import background


@pytest.fixture
def jobs(monkeypatch, tmp_path):
    """An empty registry for the test's own jobs, and a lane whose folders are tmp_path/<name>."""
    monkeypatch.setattr(background, "JOBS", {})

    def folder(name):
        (tmp_path / name).mkdir()
        return tmp_path / name

    return background.Lane(folder, lambda: "demo-root", items=[])


def test_started_jobs_run_in_order_on_one_thread_with_their_folders(jobs):
    ran = []
    gate = threading.Event()

    @background.job("first", demo=True)
    def first(folder, demo_root, lane):
        gate.wait(5)  # the second job must not begin before this one ends
        ran.append(("first", folder.name, demo_root, threading.current_thread().name))
        return 1

    @background.job("second")
    def second(folder, demo_root, lane):
        ran.append(("second", folder.name, demo_root, threading.current_thread().name))
        return lane.result("first") + 1  # an earlier job's result, from inside the lane

    jobs.start("first")
    jobs.start("second")
    time.sleep(0.2)
    assert ran == []  # both wait on the gate: the second has not started beside the first
    gate.set()
    assert jobs.result("second") == 2 and jobs.result("first") == 1
    assert [r[:3] for r in ran] == [("first", "first", "demo-root"), ("second", "second", None)]
    assert ran[0][3] == ran[1][3] != threading.current_thread().name
    assert set(jobs.seconds) == {"first", "second"}
    jobs.close()


def test_a_failure_is_raised_in_the_fixture_that_asks(jobs):
    @background.job("fails")
    def fails(folder, demo_root, lane):
        assert 1 == 2, "the job's own message"

    @background.job("skips")
    def skips(folder, demo_root, lane):
        pytest.skip("no cluster here")

    jobs.start("fails")
    jobs.start("skips")
    with pytest.raises(AssertionError, match="the job's own message"):
        jobs.result("fails")
    with pytest.raises(pytest.skip.Exception, match="no cluster here"):
        jobs.result("skips")
    jobs.close()


def test_a_job_not_started_runs_in_the_foreground(jobs):
    @background.job("late")
    def late(folder, demo_root, lane):
        return threading.current_thread().name, folder.name

    assert jobs.result("late") == (threading.current_thread().name, "late")
    jobs.close()


def test_close_drops_jobs_not_begun_and_runs_the_cleanups(jobs):
    gate, ran, cleaned = threading.Event(), [], []

    @background.job("running")
    def running(folder, demo_root, lane):
        lane.on_close(lambda: cleaned.append("cluster down"))
        gate.wait(5)
        ran.append("running")

    @background.job("queued")
    def queued(folder, demo_root, lane):
        ran.append("queued")

    jobs.start("running")
    jobs.start("queued")
    time.sleep(0.1)
    threading.Timer(0.2, gate.set).start()
    jobs.close()
    assert ran == ["running"] and cleaned == ["cluster down"]
