"""Node settings as frozen dataclasses: YAML -> ROS parameters -> one of these.

Each field's default is the ROS parameter default; ``LIVE`` names the fields a
node accepts changing while it runs (the others are read at start-up).

torch-free: importing torch costs ~1 GB of RSS with the CUDA wheels, which the
fallback node and the camera simulator should not pay on a robot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .archs import ARCHS, SplitSpec  # noqa: F401 (ARCHS re-exported)
from .optim import OptimConfig, paper_optim


@dataclass(frozen=True)
class ModelParams(SplitSpec):
    """The model description (ROS parameters ``model``, ``split_point``, ``width``, ...) plus how this
    node trains it."""

    optimizer: str = ""           # "" = the paper's (Adam for VGG, SGD+cosine for ResNet)
    lr: float = 0.0               # 0 = the paper's learning rate
    seed: int = 0
    torch_threads: int = 1        # CPU threads for this node's torch work; 0 = torch's default

    LIVE = ()

    def __post_init__(self):
        super().__post_init__()
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.optimizer not in ("", "adam", "sgd"):
            raise ValueError(f"optimizer must be '', 'adam' or 'sgd', got {self.optimizer!r}")

    def apply_threads(self) -> None:
        import torch

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def spec(self) -> SplitSpec:
        return self.model_spec()

    def optim(self) -> OptimConfig:
        optim = paper_optim(self.arch)
        if self.optimizer:
            optim = replace(optim, name=self.optimizer, lr=self.lr or (2e-4 if self.optimizer == "adam" else 0.1))
        elif self.lr:
            optim = replace(optim, lr=self.lr)
        return optim


def _positive(obj, *names):
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(obj, name)}")


@dataclass(frozen=True)
class EdgeConfig(ModelParams):
    batch_size: int = 32            # training batch
    buffer_size: int = 512          # labelled frames waiting for training (drop-oldest)
    queue_size: int = 64            # frames waiting for inference (drop-oldest)
    pending_size: int = 256         # frames waiting for their label, and labels for their frame
    predict_every: int = 1          # early-exit prediction (and cloud features) for every k-th frame
    infer_batch: int = 16           # most frames predicted in one forward pass
    link_budget_bps: float = 0.0    # bits/s the edge may offer the link; 0 = unlimited
    outbox_bits: float = 64e6       # store-and-forward limit for training batches (bits)
    outbox_age_s: float = 600.0     # training batches older than this are dropped
    spill_dir: str = ""             # "" = the outbox lives in memory; else batches beyond
    outbox_memory_bits: float = 16e6  # this many bits in memory wait in files here
    infer_age_s: float = 0.2        # inference features older than this are dropped: the fallback has
                                    # answered those frames with the early exit already
    unacked_max: int = 16           # training batches in flight (sent, not yet acknowledged); the next ones
                                    # wait in the outbox, so a backlog never floods the cloud's queue
    resend_after_s: float = 3.0     # resend a training batch the cloud has not acknowledged after this long
    heartbeat_timeout_s: float = 0.25  # stop sending (store instead) after this long without a heartbeat
    checkpoint_dir: str = ""        # "" = no checkpoints
    checkpoint_every: int = 200     # training steps between checkpoints

    LIVE = ("predict_every", "link_budget_bps")

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "batch_size", "buffer_size", "queue_size", "pending_size", "predict_every", "infer_batch",
                  "outbox_bits", "outbox_memory_bits", "outbox_age_s", "infer_age_s", "unacked_max", "resend_after_s",
                  "heartbeat_timeout_s", "checkpoint_every")
        if self.link_budget_bps < 0:
            raise ValueError(f"link_budget_bps must be >= 0, got {self.link_budget_bps}")


@dataclass(frozen=True)
class CloudConfig(ModelParams):
    queue_size: int = 256           # feature batches waiting, per purpose (drop-oldest, counted)
    heartbeat_hz: float = 10.0
    checkpoint_dir: str = ""
    checkpoint_every: int = 200
    metrics_every: int = 1          # publish training metrics every N steps
    train_nice: int = 10            # the training thread's nice increment (0-19, Linux): answers come first
    serve_refresh_s: float = 0.5    # the answering copy of the model takes the trained weights this often;
                                    # 0 = no copy: the training thread answers (deterministic, for replays)

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "queue_size", "heartbeat_hz", "checkpoint_every", "metrics_every")
        if not 0 <= self.train_nice <= 19:
            raise ValueError(f"train_nice must be in 0..19, got {self.train_nice}")
        if self.serve_refresh_s < 0:
            raise ValueError(f"serve_refresh_s must be >= 0, got {self.serve_refresh_s}")


@dataclass(frozen=True)
class FallbackConfig:
    heartbeat_timeout_s: float = 0.25  # link declared lost after this long without a 10 Hz heartbeat
    cloud_grace_s: float = 0.2        # how long an edge answer waits for the cloud's while the link is up
    poll_hz: float = 50.0

    LIVE = ("cloud_grace_s",)

    def __post_init__(self):
        _positive(self, "heartbeat_timeout_s", "cloud_grace_s", "poll_hz")


@dataclass(frozen=True)
class CameraConfig:
    data: str = "fashion-mnist"     # or cifar10-dir:PATH
    rate_hz: float = 10.0
    width_px: int = 32              # published frame size; the edge resizes to the model input
    height_px: int = 32
    holdout_every: int = 5          # every k-th frame is a held-out test image, published unlabelled
    max_frames: int = 0             # stop after this many frames; 0 = run forever
    seed: int = 0

    LIVE = ("rate_hz",)

    def __post_init__(self):
        _positive(self, "rate_hz", "width_px", "height_px", "holdout_every")
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {self.max_frames}")
