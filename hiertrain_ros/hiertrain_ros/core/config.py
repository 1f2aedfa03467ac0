"""Node settings as frozen dataclasses: YAML -> ROS parameters -> one of these.

Each field's default is the ROS parameter default; ``LIVE`` names the fields a
node accepts changing while it runs (the others are read at start-up).

torch-free: importing torch costs ~1 GB of RSS with the CUDA wheels, which the
fallback node and the camera simulator should not pay on a robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .archs import ARCHS, POSITIONS, SplitSpec  # noqa: F401 (ARCHS re-exported)
from .codec import MAX_ROBOT_ID
from .coding import CODINGS, DEFAULT_CODING
from .frames import MAX_SIDE
from .optim import OptimConfig, paper_optim
from .replay import MEMORY_POLICIES, STALENESS
from .splits import parse_split_schedule

# core.progressive's choices, here without torch (test_progressive checks they agree).
EXIT_PLACEMENTS = ("linear", "pareto")
CONFIDENCE_MEASURES = ("max_softmax", "entropy")
OFFLOAD_POLICIES = ("always", "unsure", "never")
MAX_EXITS = 3
SPLIT_POLICIES = ("fixed", "schedule", "linucb")


@dataclass(frozen=True)
class ModelParams(SplitSpec):
    """The model description plus how this node trains it.

    The description's ROS parameters are ``model``, ``split_point``, ``width``, ...
    """

    optimizer: str = ""           # "" = the paper's (Adam for VGG, SGD+cosine for ResNet)
    lr: float = 0.0               # 0 = the paper's learning rate
    seed: int = 0
    torch_threads: int = 1        # CPU threads for this node's torch work; 0 = torch's default
    init_from: str = ""           # trained weights to start from (hiertrain train --save DIR, or a whole model's
                                  # state_dict); "" = random; a checkpoint in checkpoint_dir wins (resume)
    auth_key_file: str = ""          # shared key (>= 32 bytes) signing and checking features, labels, heartbeats;
                                     # "" = none (docs/security.md)

    split_policy: str = "fixed"   # "fixed": split_point and bits for good; the edge moves the split (the cloud
                                  # follows, core.repartition) with "schedule" (split_schedule) or "linucb"
                                  # (L2S's LinUCB-E over split_candidates, from what the edge measures)
    split_schedule: str = ""      # "POINT[/BITS]@STEP,...", e.g. "3@0,5@200,3@400" (edge training steps)
    split_candidates: str = ""    # linucb: the positions to choose from, e.g. "3,5,8" (at bits); a cloud told them
                                  # too keeps them ready to move to (core.repartition)
    split_round_steps: int = 20   # linucb: training steps per round at one split
    split_horizon_s: float = 60.0  # linucb: a move must save twice its pause over this many seconds

    LIVE = ()

    def __post_init__(self):
        super().__post_init__()
        if self.split_policy not in SPLIT_POLICIES:
            raise ValueError(f"split_policy must be one of {SPLIT_POLICIES}, got {self.split_policy!r}")
        if self.movable:
            if getattr(self, "checkpoint_dir", "") or self.init_from or getattr(self, "exits", 1) != 1:
                raise ValueError("a moving split (split_policy not 'fixed') works without checkpoint_dir and "
                                 "init_from, with one exit on each side")
            for point, bits in self.split_arms() if self.knows_splits else ():
                replace(self.model_spec(), split_point=point, bits=bits)  # its checks
            if self.split_round_steps < 1:
                raise ValueError(f"split_round_steps must be >= 1, got {self.split_round_steps}")
            if not self.split_horizon_s > 0:
                raise ValueError(f"split_horizon_s must be > 0, got {self.split_horizon_s}")
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.optimizer not in ("", "adam", "sgd"):
            raise ValueError(f"optimizer must be '', 'adam' or 'sgd', got {self.optimizer!r}")

    @property
    def movable(self) -> bool:
        return self.split_policy != "fixed"

    @property
    def knows_splits(self) -> bool:
        """Whether this node knows the splits the policy may choose: the edge always, the cloud where told too."""
        return isinstance(self, EdgeConfig) or bool(self.split_candidates or self.split_schedule)

    def split_arms(self) -> list[tuple[int, int]]:
        """(split_point, bits) of every split the policy may choose (the cloud: none of its own)."""
        if self.split_policy == "schedule" and self.split_schedule:
            return [(s.split_point, s.bits) for _, s in parse_split_schedule(self.split_schedule, self.bits)]
        if self.split_policy == "linucb":
            try:
                points = [int(p) for p in self.split_candidates.split(",") if p.strip()]
            except ValueError:
                raise ValueError(f"split_candidates must be positions like '3,5,8', got {self.split_candidates!r}")
            if len(points) < 2 or len(set(points)) != len(points):
                raise ValueError(f"linucb needs two or more different split_candidates, got {self.split_candidates!r}")
            return [(p, self.bits) for p in points]
        return []

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


def _replay_checks(cfg, policy: str, policies, memory: str, ratio: str, allow_off: bool = False):
    """Return the replay fields of ``cfg``, by name: a policy, a memory in MB (0 = off where allowed), a ratio."""
    if getattr(cfg, policy) not in policies:
        raise ValueError(f"{policy} must be one of {policies}, got {getattr(cfg, policy)!r}")
    mb = getattr(cfg, memory)
    if mb < 0 or (not allow_off and not mb > 0):
        raise ValueError(f"{memory} must be {'>=' if allow_off else '>'} 0, got {mb}")
    if not 0 <= getattr(cfg, ratio) < 1:
        raise ValueError(f"{ratio} must be in [0, 1), got {getattr(cfg, ratio)}")
    if cfg.replay_idle_hz < 0:
        raise ValueError(f"replay_idle_hz must be >= 0, got {cfg.replay_idle_hz}")


def _exit_checks(cfg) -> None:
    """Check the progressive-inference fields both sides share: placement, head, measure, threshold."""
    for name, allowed in (("exit_placement", EXIT_PLACEMENTS), ("confidence_measure", CONFIDENCE_MEASURES)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")
    module, sep, factory = cfg.exit_head.partition(":")
    if cfg.exit_head and not (sep and module and factory):
        raise ValueError(f"exit_head must be '' or 'module:factory', got {cfg.exit_head!r}")
    if not 0 <= cfg.confidence_threshold <= 1:
        raise ValueError(f"confidence_threshold must be in [0, 1], got {cfg.confidence_threshold}")
    if cfg.exit_weights:  # () = every exit's loss weighs 1.0
        object.__setattr__(cfg, "exit_weights", exit_loss_weights(cfg.exit_weights, cfg.exits))


def exit_loss_weights(weights, exits: int) -> tuple[float, ...]:
    """Return each of ``exits`` exits' loss weight: ``weights`` checked, or all 1.0 (the plain sum) when empty.

    Here, torch-free, so that a node's config refuses bad weights at start-up; the trainers weigh with it.
    """
    if isinstance(weights, (str, bytes)) or not (weights is None or hasattr(weights, "__len__")):
        raise ValueError(f"exit_weights must be a list of numbers, one per exit, got {weights!r}")
    if weights is None or len(weights) == 0:
        return (1.0,) * exits
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"exit_weights must be a list of numbers, one per exit, got {list(weights)!r}") from None
    if len(values) != exits:
        raise ValueError(f"exit_weights needs one weight per exit ({exits}), got {len(values)}: {list(values)}")
    if not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"exit_weights must be finite and >= 0, got {list(values)}")
    if not any(values):
        raise ValueError(f"exit_weights must not all be 0 (no exit would train), got {list(values)}")
    return values


@dataclass(frozen=True)
class EdgeConfig(ModelParams):
    robot_id: str = ""              # names this edge's batches and answers to a shared cloud; "" = the node's
                                    # namespace ("r1" under /r1; "" in the root namespace: the one robot)
    batch_size: int = 32            # training batch
    buffer_size: int = 512          # labelled frames waiting for training (drop-oldest)
    queue_size: int = 64            # frames waiting for inference (drop-oldest)
    pending_size: int = 256         # frames waiting for their label, and labels for their frame
    max_frame_side: int = MAX_SIDE  # frames taller or wider than this (px) are refused and counted
                                    # (rejected_image); the camera's own size, e.g. 640, keeps the node's memory
                                    # and time per frame bounded against a hostile or misconfigured publisher
    predict_every: int = 1          # early-exit prediction (and cloud features) for every k-th frame
    intake_interval_s: float = 0.005  # frames and labels are taken at most this often (ros_common.Intake): a label
                                      # with its frame, a camera faster than 200 Hz several frames per wake-up (less
                                      # CPU; answers up to this much later); 0 = each as it comes
    infer_batch: int = 16           # most frames predicted in one forward pass
    coding: str = DEFAULT_CODING    # lossless coding of the feature codes on the link: "zstd" or "none"
                                    # (core.coding); the cloud decodes whichever a batch declares
    link_budget_bps: float = 0.0    # bits/s the edge may offer the link; 0 = unlimited
    outbox_bits: float = 64e6       # store-and-forward limit for training batches (bits)
    outbox_age_s: float = 600.0     # training batches older than this are dropped
    spill_dir: str = ""             # "" = the outbox lives in memory; else batches beyond
    outbox_memory_bits: float = 16e6  # this many bits in memory wait in files here, until the cloud acknowledges
                                    # them, and survive a crash of the edge (0: every batch, all crash-durable)
    infer_age_s: float = 0.2        # inference features older than this are dropped: the fallback has
                                    # answered those frames with the early exit already
    unacked_max: int = 16           # training batches in flight (sent, not yet acknowledged); the next ones
                                    # wait in the outbox, so a backlog never floods the cloud's queue
    resend_after_s: float = 3.0     # resend a training batch the cloud has not acknowledged after this long
    heartbeat_timeout_s: float = 0.25  # stop sending (store instead) after this long without a heartbeat
    checkpoint_dir: str = ""        # "" = no checkpoints
    checkpoint_every: int = 200     # training steps between checkpoints
    replay: str = "none"            # replay memory of labelled frames against forgetting: "none", "reservoir"
                                    # (a uniform sample of the stream) or "balanced" (equal slots per class seen)
    replay_memory_mb: float = 4.0   # the memory's limit (a 32x32 RGB float frame is 12 KB: 4 MB = 325 frames)
    replay_ratio: float = 0.5       # share of each training batch replayed; new frames are still trained once
    replay_idle_hz: float = 0.0     # replay-only steps per second at most while too few new frames come; 0 = off
    exits: int = 1                  # edge exits, 1..3 (at most split_point); the last reads the compressed
                                    # features and the others sit before it (progressive answering, issue 12)
    exit_placement: str = "linear"  # where the earlier exits go: "linear" or "pareto" (core.progressive)
    exit_head: str = ""             # "" = the one-layer head; else "module:factory", called with
                                    # (channels, height, width, classes)
    exit_weights: tuple[float, ...] = ()  # each exit's loss weight, earliest first, e.g. [0.3, 0.3, 1.0];
                                    # () = all 1.0 (the plain sum); each side's exits train on that side only
    confidence_threshold: float = 0.9  # c_thr: the first edge exit at least this sure answers the frame
    confidence_measure: str = "max_softmax"  # or "entropy" (one minus the normalised entropy)
    offload_policy: str = "unsure"  # inference features to the cloud: "unsure" (only frames no edge exit is
                                    # c_thr sure about: as accurate as "always" for a fifth of its bits,
                                    # benchmarks/progressive_link_bench.py), "always" (every answered frame), "never"
    privacy_floor: float = 0.0      # L2S §III-C: no split whose privacy (KL, nats) is below this, in any split
    privacy_profile: str = ""       # policy; the privacy per position: hiertrain profile --privacy --json FILE
    move_drain_timeout_s: float = 10.0  # a move of the split waits this long for the cloud to acknowledge every
                                        # training batch; then it is given up (the cloud is away) and training
                                        # resumes at the old split for as long again

    LIVE = ("predict_every", "link_budget_bps", "confidence_threshold", "confidence_measure", "offload_policy")

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "batch_size", "buffer_size", "queue_size", "pending_size", "predict_every", "infer_batch",
                  "outbox_bits", "outbox_age_s", "infer_age_s", "unacked_max", "resend_after_s",
                  "heartbeat_timeout_s", "checkpoint_every", "move_drain_timeout_s")
        if len(self.robot_id) > MAX_ROBOT_ID:
            raise ValueError(f"robot_id is {len(self.robot_id)} characters, the limit is {MAX_ROBOT_ID}")
        if not 1 <= self.max_frame_side <= MAX_SIDE:
            raise ValueError(f"max_frame_side must be in 1..{MAX_SIDE}, got {self.max_frame_side}")
        for name in ("link_budget_bps", "outbox_memory_bits", "intake_interval_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _replay_checks(self, "replay", ("none",) + MEMORY_POLICIES, "replay_memory_mb", "replay_ratio")
        if self.coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {self.coding!r}")
        if not 1 <= self.exits <= min(MAX_EXITS, self.split_point):
            raise ValueError(f"exits must be in 1..{min(MAX_EXITS, self.split_point)} (at most 3, and at most "
                             f"split_point {self.split_point}), got {self.exits}")
        if self.privacy_floor < 0 or (self.privacy_floor > 0 and not self.privacy_profile):
            raise ValueError(f"privacy_floor must be >= 0 and, above 0, needs privacy_profile; got "
                             f"{self.privacy_floor} and {self.privacy_profile!r}")
        if self.offload_policy not in OFFLOAD_POLICIES:
            raise ValueError(f"offload_policy must be one of {OFFLOAD_POLICIES}, got {self.offload_policy!r}")
        _exit_checks(self)


@dataclass(frozen=True)
class CloudConfig(ModelParams):
    queue_size: int = 256           # feature batches waiting, per purpose; when full, the robot holding the
                                    # most samples loses its oldest (counted). Robots are served in turn
    max_batch_samples: int = 256    # a feature batch with more samples is refused and counted (one message
                                    # must not tie up the cloud: a 4096-sample one did)
    heartbeat_hz: float = 10.0
    checkpoint_dir: str = ""
    checkpoint_every: int = 200
    metrics_every: int = 1          # publish training metrics every N steps
    train_nice: int = 0             # the training thread's nice value (0-19, Linux). Raise it where the cloud
                                    # shares its CPUs and answers must come first; it also slows training
                                    # against every other process there (nice 10 starved it in the tests)
    serve_refresh_s: float = 0.5    # the answering copy of the model takes the trained weights this often;
                                    # 0 = no copy: the training thread answers (deterministic, for replays)
    latent_replay_mb: float = 0.0   # memory for trained feature batches, kept quantized, replayed against
                                    # forgetting; 0 = off
    latent_ratio: float = 0.5       # share of each training step's samples that are replayed
    latent_staleness: str = "none"  # the edge encoder keeps changing: "none", "drop" (evict past latent_max_age)
                                    # or "downweight" (loss weight halves every latent_half_life)
    latent_max_age: int = 2000      # drop: a batch this many of its robot's seqs behind the newest is evicted
    latent_half_life: float = 500.0  # downweight: seqs of age that halve a replayed batch's loss weight
    replay_idle_hz: float = 0.0     # replay-only steps per second at most while too few new batches come; 0 = off
    exits: int = 1                  # cloud exits, 1..3: the last is the network's output, the others early exits
                                    # after the split; the cloud answers from the first that is sure (issue 12)
    exit_placement: str = "linear"  # where the early exits go: "linear" or "pareto" (core.progressive)
    exit_head: str = ""             # "" = the one-layer head; else "module:factory"
    exit_weights: tuple[float, ...] = ()  # each exit's loss weight, the network's output last; () = all 1.0
    confidence_threshold: float = 0.9  # c_thr of the cloud's early exits
    confidence_measure: str = "max_softmax"  # or "entropy"

    LIVE = ("confidence_threshold", "confidence_measure")

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "queue_size", "max_batch_samples", "heartbeat_hz", "checkpoint_every", "metrics_every",
                  "latent_max_age", "latent_half_life")
        most = min(MAX_EXITS, len(POSITIONS[self.arch]) - self.split_point + 1)
        if not 1 <= self.exits <= most:
            raise ValueError(f"exits must be in 1..{most} (at most 3, and at most the positions after split_point "
                             f"{self.split_point} plus the output), got {self.exits}")
        _exit_checks(self)
        if not 0 <= self.train_nice <= 19:
            raise ValueError(f"train_nice must be in 0..19, got {self.train_nice}")
        if self.serve_refresh_s < 0:
            raise ValueError(f"serve_refresh_s must be >= 0, got {self.serve_refresh_s}")
        _replay_checks(self, "latent_staleness", STALENESS, "latent_replay_mb", "latent_ratio", allow_off=True)


@dataclass(frozen=True)
class FallbackConfig:
    robot_id: str = ""                # the robot whose cloud answers to serve: as edge_node.robot_id
    heartbeat_timeout_s: float = 0.25  # link declared lost after this long without a 10 Hz heartbeat
    cloud_grace_s: float = 0.2        # how long an edge answer waits for the cloud's while the link is up
    poll_hz: float = 50.0
    arbiter: str = "best"             # both answers in time: "best" = the likelier right one (calibrated
                                      # confidence, else recent accuracy); "cloud_first" = always the cloud's
    recent_window: int = 200          # labelled frames in each path's recent (prequential) accuracy: the leader
    calibration_bins: int = 10        # confidence bins of each path's reliability table
    calibration_horizon: float = 500.0  # labelled frames over which the table forgets (the models keep learning)
    calibration_min: float = 5.0      # labelled frames both paths' bins need before confidence decides
    calibration_z: float = 2.0        # and their estimates must differ by this many standard errors (0: any)
    override_guard: bool = True       # bins overrule the more accurate path only while that has paid off
    auth_key_file: str = ""          # shared key (>= 32 bytes) signing and checking features, labels, heartbeats;
                                     # "" = none (docs/security.md)
    metrics_hz: float = 1.0           # adaptation metrics (topic and /diagnostics) per second
    metrics_history: int = 20000      # scored answers kept for the recovery figure on /diagnostics

    LIVE = ("cloud_grace_s", "arbiter")

    def __post_init__(self):
        _positive(self, "heartbeat_timeout_s", "cloud_grace_s", "poll_hz", "recent_window", "calibration_bins",
                  "calibration_min", "metrics_hz", "metrics_history")
        if self.arbiter not in ("best", "cloud_first"):
            raise ValueError(f"arbiter must be 'best' or 'cloud_first', got {self.arbiter!r}")
        if self.calibration_horizon < 1:
            raise ValueError(f"calibration_horizon must be >= 1, got {self.calibration_horizon}")
        if self.calibration_z < 0:
            raise ValueError(f"calibration_z must be >= 0, got {self.calibration_z}")


@dataclass(frozen=True)
class CameraConfig:
    data: str = "fashion-mnist"     # or cifar10-dir:PATH
    rate_hz: float = 10.0
    width_px: int = 32              # published frame size; the edge resizes to the model input
    height_px: int = 32
    holdout_every: int = 5          # every k-th frame is a held-out test image, published unlabelled
    max_frames: int = 0             # stop after this many frames; 0 = run forever (or to the scenario's end)
    seed: int = 0
    scenario: str = ""              # a scenario YAML or a shipped name (domain_shift); "" = the dataset as is
    auth_key_file: str = ""          # shared key (>= 32 bytes) signing and checking features, labels, heartbeats;
                                     # "" = none (docs/security.md)

    LIVE = ("rate_hz",)

    def __post_init__(self):
        _positive(self, "rate_hz", "width_px", "height_px", "holdout_every")
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {self.max_frames}")
