"""Training data as LightningDataModules: CIFAR-10 and ImageNet-style image folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from workbench.data.files import DataNotFoundError, data_root, offline

CIFAR10_MEAN = (0.4913, 0.4821, 0.4465)  # of the JPEG-rebuilt mirror in shared/data (see its README)
CIFAR10_STD = (0.2452, 0.2428, 0.2606)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_CITATION = ("Krizhevsky, A. (2009). Learning Multiple Layers of Features from Tiny Images. Technical "
                    "report, University of Toronto.")


class CIFAR10Arrays(torch.utils.data.Dataset):
    """One CIFAR-10 split held as arrays (loaded by ``workbench.data.cifar``: hash-checked, no code run); items are
    (transformed image, label), as torchvision's CIFAR10 gives them."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform=None):
        self.data, self.targets, self.transform = images, [int(t) for t in targets], transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform else image), self.targets[index]


def balanced_subset(labels: Sequence[int], n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` items with (as nearly as possible) equal counts per class, seeded."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if n > len(labels):
        raise ValueError(f"subset of {n} items asked from a dataset of {len(labels)}")
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    take = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    return np.sort(np.concatenate([p[:k] for p, k in zip(per_class, take)]))


def image_transforms(image_size: int, mean, std, augment: bool, native_size: int | None = None):
    ops = []
    if native_size is None or image_size != native_size:
        ops.append(transforms.Resize(image_size, antialias=True))
        ops.append(transforms.CenterCrop(image_size))
    if augment:
        ops += [transforms.RandomCrop(image_size, padding=image_size // 8), transforms.RandomHorizontalFlip()]
    ops += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(ops)


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 from ``<data root>/cifar10`` (torchvision downloads it there when absent and online).

    ``subset``: number of training images, class-balanced and seeded, so CI can train on a few thousand;
    ``test_subset`` likewise for the test split. 10% of the training subset is held out for validation.
    """

    def __init__(self, root: str | os.PathLike | None = None, batch_size: int = 128, subset: int | None = None,
                 test_subset: int | None = None, num_workers: int = 0, image_size: int = 32,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD, augment: bool = True,
                 val_fraction: float = 0.1, seed: int = 0):
        super().__init__()
        self.root = Path(root) if root is not None else data_root() / "cifar10"
        self.batch_size = batch_size
        self.subset = subset
        self.test_subset = test_subset
        self.num_workers = num_workers
        self.seed = seed
        self.val_fraction = val_fraction
        self.train_transform = image_transforms(image_size, mean, std, augment, native_size=32)
        self.eval_transform = image_transforms(image_size, mean, std, False, native_size=32)
        self.classes = CIFAR10_CLASSES
        self.data_files: dict[str, str] = {}  # every batch read: path -> sha256 (recorded in provenance)

    def _split(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        from workbench.data.cifar import BATCH_FOLDER, load_split

        have = (self.root / BATCH_FOLDER / "batches.meta").exists()
        if not have and offline():
            raise DataNotFoundError(
                f"CIFAR-10 is not under {self.root} (expected {BATCH_FOLDER}/) and downloads are disabled; "
                f"set WORKBENCH_DATA to the folder holding cifar10/, or unset WORKBENCH_OFFLINE")
        if not have:
            # torchvision verifies the md5 of the official archive it downloads and unpacks
            datasets.CIFAR10(str(self.root), train=train, download=True)
        images, labels, hashes = load_split(self.root, train)
        self.data_files.update(hashes)
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "_ready", False):
            return
        images, labels = self._split(True)
        idx = balanced_subset(labels, self.subset, self.seed) if self.subset else np.arange(len(labels))
        idx = np.random.default_rng(self.seed).permutation(idx)
        n_val = max(1, int(round(len(idx) * self.val_fraction)))
        train, val = idx[n_val:], np.sort(idx[:n_val])
        self.train_set = CIFAR10Arrays(images[train], labels[train], self.train_transform)
        self.val_set = CIFAR10Arrays(images[val], labels[val], self.eval_transform)
        images, labels = self._split(False)
        tidx = balanced_subset(labels, self.test_subset, self.seed) if self.test_subset else np.arange(len(labels))
        self.test_set = CIFAR10Arrays(images[tidx], labels[tidx], self.eval_transform)
        self._ready = True

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          generator=generator if shuffle else None, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)


class ImageFolderDataModule(L.LightningDataModule):
    """An ImageNet-style folder (``<root>/train/<class>/*.jpg``, ``<root>/val/<class>/*.jpg``)."""

    def __init__(self, root: str | os.PathLike, batch_size: int = 64, subset: int | None = None,
                 num_workers: int = 2, image_size: int = 224, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), augment: bool = True, seed: int = 0,
                 train_dir: str = "train", val_dir: str = "val"):
        super().__init__()
        self.root = Path(root)
        for sub in (train_dir, val_dir):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"{self.root / sub} does not exist: an image folder data module needs "
                                        f"{train_dir}/<class>/ and {val_dir}/<class>/ under {self.root}")
        self.batch_size, self.subset, self.num_workers, self.seed = batch_size, subset, num_workers, seed
        self.train_transform = transforms.Compose(
            ([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()] if augment else
             [transforms.Resize(int(image_size * 8 / 7)), transforms.CenterCrop(image_size)])
            + [transforms.ToTensor(), transforms.Normalize(mean, std)])
        self.eval_transform = image_transforms(image_size, mean, std, False)
        self.train_dir, self.val_dir = train_dir, val_dir

    def setup(self, stage: str | None = None) -> None:
        train = datasets.ImageFolder(str(self.root / self.train_dir), transform=self.train_transform)
        self.classes = train.classes
        if self.subset:
            train = Subset(train, balanced_subset(train.targets, self.subset, self.seed).tolist())
        self.train_set = train
        self.val_set = datasets.ImageFolder(str(self.root / self.val_dir), transform=self.eval_transform)
        self.test_set = self.val_set

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def build_datamodule(data_cfg: dict | None, preprocess: dict | None = None, seed: int = 0):
    """A LightningDataModule from ``data_cfg`` (a Hydra ``_target_`` spec, CIFAR-10 by default) with the model's
    preprocessing (image_size, mean, std) filled in, so that training sees what extraction and attribution see."""
    import hydra.utils

    data = dict(data_cfg or {})
    data.setdefault("_target_", "workbench.data.CIFAR10DataModule")
    for key in ("image_size", "mean", "std"):
        if key in (preprocess or {}):
            data[key] = preprocess[key]
    data.setdefault("seed", int(seed))
    return hydra.utils.instantiate(data, _convert_="all")
