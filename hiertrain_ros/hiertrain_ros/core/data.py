"""Datasets as camera frames: uint8 N x 32 x 32 x 3 arrays plus int labels.

The embedded default is the real Fashion-MNIST shipped by Debian's
``dataset-fashion-mnist`` (28x28 grey, padded to 32x32, repeated to 3 channels).
CIFAR-10 is read from the standard python layout in a local folder.  Nothing is
ever downloaded.
"""

from __future__ import annotations

import gzip
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frames import INPUT_SIZE

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle-boot")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclass(frozen=True)
class Frames:
    """A labelled set of RGB frames as the camera would publish them."""

    images: np.ndarray  # uint8, N x H x W x 3
    labels: np.ndarray  # int64, N
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "Frames":
        if n is None or n >= len(self):
            return self
        return Frames(self.images[:n], self.labels[:n], self.num_classes)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x800 + ndim:
        raise ValueError(f"{path}: not an IDX file with {ndim} dimensions (magic {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated ({data.size} values for dimensions {dims})")
    return data.reshape(dims)


def load_fashion_mnist(split: str = "train", root: Path = FASHION_MNIST_DIR) -> Frames:
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_file, lbl_file = (Path(root) / f for f in _FASHION_FILES[split])
    if not img_file.exists():
        raise FileNotFoundError(
            f"{img_file} not found: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    images = _read_idx(img_file, 3)
    labels = _read_idx(lbl_file, 1).astype(np.int64)
    pad = (INPUT_SIZE - images.shape[1]) // 2
    images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    return Frames(np.repeat(images[..., None], 3, axis=3), labels, 10)


def load_cifar10_dir(path: str | Path, split: str = "train") -> Frames:
    """CIFAR-10 'python version' layout: data_batch_1..5 and test_batch pickles."""
    root = Path(path)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        file = root / name
        if not file.exists():
            raise FileNotFoundError(f"{file} not found: expected the CIFAR-10 python layout in {root}")
        with open(file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return Frames(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), 10)


def load_dataset(spec: str, split: str = "train") -> Frames:
    """``fashion-mnist`` or ``cifar10-dir:PATH``."""
    if spec == "fashion-mnist":
        return load_fashion_mnist(split)
    if spec.startswith("cifar10-dir:"):
        return load_cifar10_dir(spec.split(":", 1)[1], split)
    raise ValueError(f"data must be 'fashion-mnist' or 'cifar10-dir:PATH', got {spec!r}")


def frames_to_tensor(images: np.ndarray, size: int = INPUT_SIZE):
    """uint8 N x H x W x 3 frames -> normalized float tensor N x 3 x size x size."""
    import torch  # here, not at the top: the camera simulator reads datasets without torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.div_(127.5).sub_(1.0)


def held_frame(frame: np.ndarray):
    """Return what the edge holds of a camera frame until it trains on it or answers it.

    A frame of the model's input size stays the uint8 frame it came as (a view, no copy): a camera faster than
    the edge trains has most of its frames dropped unused, and a per-frame conversion to a tensor cost more than
    the rest of the callback (issue 14).  A frame of another size is resized now, to the float tensor of the
    input size, so that a held frame never takes more memory than one of the input size (a 640x480 frame is 300
    times one of 32x32).  :func:`held_to_tensor` converts a batch of either.
    """
    if frame.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
        return frame
    return frames_to_tensor(frame[None])[0]


def held_to_tensor(frames):
    """Return the float tensor N x 3 x S x S of frames :func:`held_frame` kept, the uint8 ones converted at once."""
    import torch

    raw = [i for i, f in enumerate(frames) if isinstance(f, np.ndarray)]
    if len(raw) == len(frames):
        return frames_to_tensor(np.stack(frames))
    out = list(frames)
    if raw:
        for i, x in zip(raw, frames_to_tensor(np.stack([frames[i] for i in raw]))):
            out[i] = x
    return torch.stack(out)


def held_to_samples(items: list) -> list:
    """Return labelled held frames ``(frame, label)`` as ``(tensor, label)``, converted in one batch.

    Each tensor owns its storage (a replay memory that keeps one does not keep its whole batch).
    """
    images = held_to_tensor([f for f, _ in items])
    return [(x.clone(), y) for x, (_, y) in zip(images, items)]


def batches(frames: Frames, batch_size: int, *, shuffle: bool, seed: int = 0):
    """Yield (images tensor, labels tensor) batches; the last partial batch is kept."""
    import torch

    order = np.random.default_rng(seed).permutation(len(frames)) if shuffle else np.arange(len(frames))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield frames_to_tensor(frames.images[idx]), torch.from_numpy(frames.labels[idx])
