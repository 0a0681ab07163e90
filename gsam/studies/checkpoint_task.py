"""A trainer checkpoint (``checkpoints/last.pt``: ``model`` and ``config``) as something to measure:
the model and a fixed, seeded subset of its training images with the eval transform."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Subset

from gsam.state.checkpoint import load
from gsam.run.engine import loss_function


def checkpoint_task(path: str | Path, *, images: int = 512, batch_size: int = 128, data_root: str | None = None,
                    seed: int = 0):
    """(model, batches, criterion) for the checkpoint at ``path``; ``data_root`` overrides the
    config's ``data.root``. The images are a seeded random subset of the train split (centre crop,
    no augmentation), the same for every call."""
    from gsam import models
    from gsam.data.folder import eval_transform
    from torchvision import datasets

    state = load(Path(path))
    if "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a trainer checkpoint (expected keys 'model' and 'config')")
    cfg = OmegaConf.create(state["config"])
    model = models.build_model(cfg.model, num_classes=int(cfg.data.num_classes))
    model.load_state_dict(state["model"])
    root = Path(data_root or cfg.data.root)
    if cfg.data.name == "demo":
        from gsam.data.demo import write_demo_dataset

        write_demo_dataset(root, image_size=int(cfg.data.source_size))
    split = root / cfg.data.train_split
    if not split.is_dir():
        raise ValueError(f"no training images at {split}: pass the dataset folder (--data-root)")
    dc = models.model_data_config(model)
    ds = datasets.ImageFolder(str(split), transform=eval_transform(int(cfg.data.img_size), dc["mean"], dc["std"],
                                                                   float(cfg.data.crop_pct)))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:images].tolist()
    batches = list(DataLoader(Subset(ds, order), batch_size=batch_size, shuffle=False, num_workers=0))
    return model, [(x, y) for x, y in batches], loss_function(cfg.model.loss, int(cfg.data.num_classes))
