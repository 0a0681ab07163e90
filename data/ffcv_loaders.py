"""FFCV loaders over the betons of ``scripts/write_betons.py`` (``data.loader=ffcv``).

The recipe is the folder loader's (data/folder.py): train = random-resized crop (area ``min_crop_scale``-1,
aspect 3/4-4/3) + horizontal flip; eval = centre crop of ``crop_pct`` of the short side, resized to
``img_size``. Differences from the folder loader, all FFCV's: resizing uses OpenCV's INTER_AREA (PIL
bilinear there); the crop and flip draws come from numba's per-thread RNG, which FFCV does not seed, so
a resumed run sees the same images in the same order on the same ranks but not the same crops.

Sample order is ours, not FFCV's: the same ``ShardSampler`` as the folder loader (a seeded permutation per
epoch, a disjoint shard per rank, drop_last to whole global batches, restartable mid-epoch). Evaluation
shards without padding, so every image is counted exactly once. Normalisation runs in torch after the
batch is on the device: FFCV's ``NormalizeImage`` needs cupy on GPU and is pathologically slow placed
after ``ToTensor`` on CPU.

Before any of this, each beton is checked against its sidecar (size and fingerprint, data/beton_check.py):
a truncated copy is refused in one line naming it. A reader thread that dies anyway (a file damaged inside)
ends the epoch with an error naming the beton instead of leaving the trainer waiting for a batch. While the
run reads it, a beton rewritten under the same name stops the run (``BetonWatch``).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # numba's tbb layer aborts at exit now and then

import numpy as np
import torch

from gsam.config.checks import ConfigError

from .beton_check import check_beton, fingerprint
from .betons import read_sidecar
from .folder import ShardSampler


def ffcv_available() -> bool:
    try:
        import ffcv.loader  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ffcv():
    if not ffcv_available():
        raise ImportError("data.loader=ffcv: FFCV is not installed. Run `bash scripts/install_ffcv.sh` (needs "
                          "libopencv-imgproc-dev libturbojpeg0-dev pkg-config), or use data.loader=folder")


class BetonChanged(ConfigError):
    """A beton was rewritten under the run that reads it."""


class BetonWatch:
    """The beton a loader reads, as it was checked at start: ``check()`` (one ``stat``) raises BetonChanged when
    the file under that name has changed since. FFCV keeps the index (per-record offsets) it read at start, and
    reads the pages through the name: in place (``cp other.beton train.beton``) at once, and after a rename over
    it at the next epoch (``data.os_cache=false`` opens the file again each epoch). Either way the run would
    train on records cut at the old offsets (a run went from 100% to 33% val, and exited 0). A file whose size
    or modification time changed but whose fingerprint is the one its sidecar records (``recorded``: a
    ``touch``, the same beton copied again) is the same beton: the run goes on. Without a record, any change
    stops it (nothing is read here: a loader built outside ``build_ffcv_loaders`` reads the file as before)."""

    def __init__(self, path: Path, recorded: dict | None):
        self.path = Path(path)
        self.seen = self._stat()
        self.fingerprint = recorded["fingerprint"] if recorded else None

    def _stat(self) -> tuple:
        st = os.stat(self.path)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def check(self) -> None:
        try:
            now = self._stat()
        except FileNotFoundError:
            raise BetonChanged(f"{self.path}: removed while this run reads it; put it back and rerun (the run "
                               "resumes from its last checkpoint)") from None
        if now == self.seen:
            return
        if self.fingerprint is not None and fingerprint(self.path, now[2]) == self.fingerprint:
            self.seen = now
            return
        raise BetonChanged(f"{self.path}: rewritten while this run reads it (another file now has its name); the "
                           "last batches may have come from the new bytes. Put the beton of this run back (copy it "
                           "under another name, then rename it over this one) and rerun: the run resumes from its "
                           "last checkpoint")


class FFCVLoader:
    """An FFCV ``Loader`` driven by a ``ShardSampler``; yields normalised float batches (x, y) or, with
    ``with_index``, (x, y, record index). ``raw_only``: every record is raw pixels (the evaluation betons),
    so the decoder needs no JPEG scratch buffer (see ``raw_center_crop``)."""

    def __init__(self, beton: Path, *, train: bool, img_size: int, mean, std, batch: int, rank: int, world: int,
                 seed: int, num_workers: int, device: torch.device, channels_last: bool, min_crop_scale: float,
                 crop_pct: float, os_cache: bool, with_index: bool = False, raw_only: bool = False,
                 recorded: dict | None = None):
        _require_ffcv()
        self.watch = BetonWatch(beton, recorded)  # before FFCV reads the file: what it reads is what was checked
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import RandomHorizontalFlip, ToDevice, ToTensor, ToTorchImage

        on_gpu = device.type == "cuda"
        to_device = [ToDevice(device, non_blocking=True)] if on_gpu else []
        if train:
            image = [RandomResizedCropRGBImageDecoder((img_size, img_size), scale=(min_crop_scale, 1.0)),
                     RandomHorizontalFlip()]
        else:
            decoder = raw_center_crop() if raw_only else CenterCropRGBImageDecoder
            image = [decoder((img_size, img_size), ratio=crop_pct)]
        # ToTorchImage(channels_last=False) copies into a buffer it allocates on the host, so on a GPU the
        # batch came back to the CPU (seen on an H100, 2026-11-27): there, keep FFCV's zero-copy NHWC view and
        # make it contiguous on the device in __iter__. On the CPU FFCV's own copy is the fast one (bench_data:
        # 1,940 img/s against 1,297 with the view made contiguous in torch)
        nhwc_view = channels_last or on_gpu
        pipelines = {"image": image + [ToTensor()] + to_device + [ToTorchImage(channels_last=nhwc_view)],
                     "label": [IntDecoder(), ToTensor()] + to_device}
        self.loader = Loader(str(beton), batch_size=batch, num_workers=max(num_workers, 1), os_cache=os_cache,
                             order=OrderOption.SEQUENTIAL, drop_last=train, pipelines=pipelines)
        n = len(self.loader.indices)
        self.sampler = ShardSampler(n, rank=rank, world=world, shuffle=train, seed=seed, batch=batch,
                                    drop_last=train)
        if train and len(self.sampler) < batch:
            raise ValueError(f"data.batch_size: {batch * world} is larger than the training set ({n} images)")
        self.loader.traversal_order.sample_order = lambda epoch: np.asarray(list(self.sampler), dtype=np.uint64)
        self.beton = Path(beton)
        self.batch, self.train, self.with_index, self.channels_last = batch, train, with_index, channels_last
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch if self.train else math.ceil(n / self.batch)

    def __iter__(self):
        order = list(self.sampler) if self.with_index else None  # the sampler's permutation, only when needed
        self.watch.check()  # FFCV opens the file by its name again now
        epoch = iter(self.loader)
        try:
            for b, (x, y) in enumerate(_batches(epoch, self.beton)):
                self.watch.check()  # one stat a batch: an in-place copy is seen a few batches after it began
                x = x.float().sub_(self.mean).div_(self.std)
                if not self.channels_last:
                    x = x.contiguous()
                y = y.view(-1).long()
                if self.with_index:
                    yield x, y, torch.as_tensor(order[b * self.batch:(b + 1) * self.batch])
                else:
                    yield x, y
        finally:
            _stop(epoch)


def raw_center_crop():
    """FFCV's centre-crop decoder without its JPEG scratch buffer. FFCV allocates that buffer for every image
    of (batches_ahead + 2) = 5 batches at the largest height times the largest width in the beton, and pins
    it on a GPU machine: for a val beton of original images (one 4000x3000 image among 50,000) and a batch of
    250 that is 5 x 250 x 36 MB = 45 GB per process, which fails ("can't allocate memory") or pins memory a
    node does not have. A raw record is read in place and never touches the buffer, so one byte per image
    stands in for it."""
    import numpy as np
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
    from ffcv.pipeline.allocation_query import AllocationQuery

    class RawCenterCrop(CenterCropRGBImageDecoder):
        def declare_state_and_memory(self, previous_state):
            if (self.metadata["mode"] != 1).any():  # ffcv's IMAGE_MODES["raw"]
                raise ValueError("raw_only: this beton holds JPEG records")
            state, (output, _scratch) = super().declare_state_and_memory(previous_state)
            return state, (output, AllocationQuery((1,), np.dtype("<u1")))

    return RawCenterCrop


def _batches(epoch, beton: Path):
    """FFCV's batches, but a reader thread that has died raises instead of leaving its queue empty for ever
    (FFCV's ``__next__`` waits on it without a timeout). The wait wakes as soon as a batch is put."""
    q = epoch.output_queue
    while True:
        with q.not_empty:
            while not q.queue:
                if not epoch.is_alive():
                    raise RuntimeError(f"{beton}: FFCV's reader thread died (its error is printed above); the file "
                                       "may be damaged: check it with scripts/write_betons.py --verify")
                q.not_empty.wait(0.5)
        try:
            yield next(epoch)
        except StopIteration:
            return


def _stop(epoch) -> None:
    """End an FFCV epoch's worker thread before anything else runs FFCV. Left mid-epoch (a run stopped at
    ``train.max_steps`` or preempted, then evaluated), the thread goes on decoding until its queue is full,
    and a second loader's numba parallel region beside it aborts the process under the workqueue threading
    layer ("Concurrent access has been detected", seen on an H100, 2026-11-27). FFCV's own ``close`` only
    raises a flag and frees the batch memory the thread may still be writing."""
    epoch.terminate_event.set()
    epoch.join(timeout=120)
    epoch.close()


def build_ffcv_loaders(*, betons: str, img_size: int, mean, std, batch: int, eval_batch: int, num_workers: int,
                       rank: int, world: int, seed: int, device: torch.device, channels_last: bool,
                       min_crop_scale: float, crop_pct: float, os_cache: bool):
    """Returns (train loader, {name: eval loader}, classes, {name: files}) from ``betons``/{train,minival,val}.beton."""
    root = Path(betons) if betons else None
    if root is None or not (root / "train.beton").is_file():
        raise FileNotFoundError(f"data.betons={betons!r}: no train.beton there (write them with "
                                "scripts/write_betons.py, or use data.loader=folder with data.root)")
    meta = read_sidecar(root / "train.beton")
    check_beton(root / "train.beton", meta.get("beton"))
    classes = meta["classes"]
    if os_cache and rank == 0:
        warn_if_uncacheable(root / "train.beton")
    common = dict(img_size=img_size, mean=mean, std=std, rank=rank, world=world, seed=seed, num_workers=num_workers,
                  device=device, channels_last=channels_last, min_crop_scale=min_crop_scale, crop_pct=crop_pct,
                  os_cache=os_cache)
    train = FFCVLoader(root / "train.beton", train=True, batch=batch, recorded=meta.get("beton"), **common)
    evals, files = {}, {}
    for name in ("minival", "val"):
        path = root / f"{name}.beton"
        if not path.is_file():
            continue
        meta = read_sidecar(path)
        check_beton(path, meta.get("beton"))
        if meta["classes"] != classes:
            raise ValueError(f"{path}: its class list differs from train.beton's")
        raw_only = meta["options"]["write_mode"] == "raw"  # write_betons stores minival and val raw
        evals[name] = FFCVLoader(path, train=False, batch=eval_batch, with_index=True, raw_only=raw_only,
                                 recorded=meta.get("beton"), **common)
        files[name] = meta.get("files")
    return train, evals, classes, files


def node_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def warn_if_uncacheable(beton: Path) -> None:
    """One line when ``data.os_cache=true`` cannot work as meant: the node's page cache cannot hold the beton,
    so every epoch reads it from disk again, at random (docs/data.md: what a node needs, the alternatives)."""
    size, memory = Path(beton).stat().st_size, node_memory_bytes()
    if size > memory:
        warnings.warn(f"data.os_cache=true: {beton} ({size / 1e9:.1f} GB) is larger than this node's memory "
                      f"({memory / 1e9:.1f} GB), so it is read from disk every epoch; see docs/data.md "
                      "(data.os_cache=false, or a smaller beton)", stacklevel=2)
