"""FFCV's ``DatasetWriter`` with its worker processes watched, so that a failed worker stops the write.

FFCV's parent process waits until its shared "done" counter reaches the number of records. A worker that
raises (or is killed) never adds its chunk, so that wait is endless, and the worker's exception is printed
by nothing but multiprocessing. Here each worker records the record it is on in shared memory and reports
any exception before it touches the file again; the parent polls for reports and dead workers every 0.1 s,
ends the other workers and raises ``WriterFailed`` naming the worker's error and file.

The workers claim chunks of records from a shared counter; FFCV puts every chunk into a
``multiprocessing.Queue`` up front instead. Once the workers had stopped, the chunks nobody would read stayed in
that queue, and at exit Python's queue finaliser waited for its feeder thread to write them into a full pipe:
the script printed its error and never ended (seen with 20 classes x 1,000 JPEGs; reproduced with 4,000
images, whose chunks are more than the pipe's 64 KiB). Every worker dies with the main process
(data/write_guard.py).
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import time

import numpy as np
from ffcv.memory_allocator import MemoryAllocator
from ffcv.writer import DatasetWriter, handle_sample

from .beton_errors import WriterFailed
from .write_guard import die_with_parent, raise_if_stopped

POLL_S = 0.1


def _claim(next_chunk) -> int:
    """The index of the next chunk nobody has taken (past the last one when all are taken)."""
    with next_chunk.get_lock():
        k = next_chunk.value
        next_chunk.value = k + 1
    return k


def _worker(slot, parent, current, errors, next_chunk, chunk, n, metadata_sm, metadata_type, fields, allocator,
            done, allocations, dataset):
    """One writer process: FFCV's indexed-dataset job (``handle_sample`` on each record of each chunk it claims;
    record i goes to row i), with the record in progress published in ``current[slot]`` and any exception sent
    to the parent. On failure the process exits at once: flushing its page would wait, as FFCV's allocator
    does, for the pages before it."""
    die_with_parent(parent)
    metadata = np.frombuffer(metadata_sm.buf, dtype=metadata_type)
    try:
        allocator.__enter__()
        while (start := _claim(next_chunk) * chunk) < n:
            for i in range(start, min(start + chunk, n)):
                current[slot] = i
                handle_sample(dataset[i], i, metadata_type.names, metadata, allocator, fields)
            with done.get_lock():
                done.value += min(start + chunk, n) - start
        current[slot] = -1
        allocator.__exit__(None, None, None)
    except BaseException as e:  # noqa: BLE001 - whatever it is, the parent must hear of it and stop
        errors.put((slot, int(current[slot]), f"{type(e).__name__}: {e}"))
        errors.close()
        errors.join_thread()
        os._exit(1)
    allocations.put(allocator.allocations)


class WatchedWriter(DatasetWriter):
    """``DatasetWriter.from_indexed_dataset`` that raises ``WriterFailed`` instead of hanging. Errors begin with
    ``name`` (the beton being written); ``describe(i)`` names source record i (its file); ``progress``: a bar."""

    def __init__(self, fname: str, fields, *, page_size: int, num_workers: int, name: str, describe, progress: bool):
        super().__init__(fname, fields, page_size=page_size, num_workers=num_workers)
        self.name, self.describe, self.progress = name, describe, progress

    def from_indexed_dataset(self, dataset, chunksize: int = 100):
        """Every record of ``dataset`` in its order (FFCV's ``indices`` and ``shuffle_indices`` are not used)."""
        self.num_samples = len(dataset)
        self.prepare()
        try:
            self.finalize(self._run_workers(dataset, chunksize))
        finally:
            self.metadata_sm.close()
            self.metadata_sm.unlink()

    def _run_workers(self, dataset, chunk: int) -> list:
        allocations, errors = mp.Queue(), mp.Queue()  # only the workers put: no feeder thread here to wait on
        next_chunk = mp.Value(ctypes.c_int64, 0)
        done = mp.Value(ctypes.c_uint64, 0)
        current = mp.Array(ctypes.c_int64, [-1] * self.num_workers, lock=False)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        procs = [mp.Process(target=_worker, daemon=True,
                            args=(k, os.getpid(), current, errors, next_chunk, chunk, self.num_samples,
                                  self.metadata_sm, self.metadata_type, self.fields, allocator, done, allocations,
                                  dataset))
                 for k in range(self.num_workers)]
        try:
            for p in procs:
                p.start()
            self._wait_for_records(procs, done, errors, current)
            table = []
            for _ in procs:  # a worker's allocation list comes after its last record: it can still fail here
                table.extend(self._next_or_fail(allocations, procs, errors, current))
            for p in procs:
                p.join()
            return table
        finally:
            _stop(procs)

    def _wait_for_records(self, procs, done, errors, current) -> None:
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.num_samples, desc=f"writing {os.path.basename(self.name)}", unit="img")
        try:
            while (n := done.value) < self.num_samples:
                raise_if_stopped()
                self._raise_if_failed(procs, errors, current)
                if bar is not None:
                    bar.update(n - bar.n)
                time.sleep(POLL_S)
        finally:
            if bar is not None:
                bar.close()

    def _next_or_fail(self, allocations, procs, errors, current) -> list:
        while True:
            try:
                return allocations.get(timeout=POLL_S)
            except queue.Empty:
                raise_if_stopped()
                self._raise_if_failed(procs, errors, current)

    def _raise_if_failed(self, procs, errors, current) -> None:
        dead = [(k, p.exitcode) for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
        if not dead:
            return
        try:  # the worker's own report, sent just before it exited
            slot, source_ix, error = errors.get(timeout=1.0)
        except queue.Empty:  # killed without a word (a signal, the OOM killer)
            slot, code = dead[0]
            source_ix, error = int(current[slot]), f"exited with {'signal ' + str(-code) if code < 0 else code}"
        where = self.describe(source_ix) if source_ix >= 0 else "no record (starting or finishing)"
        raise WriterFailed(f"{self.name}: writer worker {slot} failed on {where}: {error}")


def _stop(procs) -> None:
    """End every worker still running (TERM, then KILL after 5 s)."""
    procs = [p for p in procs if p.pid is not None]  # a signal may have come before all had started
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5
    for p in procs:
        p.join(timeout=max(deadline - time.monotonic(), 0))
        if p.is_alive():
            p.kill()
            p.join()
