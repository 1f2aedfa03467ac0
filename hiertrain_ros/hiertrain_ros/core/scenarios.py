"""Streams that change.

A scenario is a list of segments, each with a length in frames, the classes present and a domain transform applied to
every frame of the segment.

A scenario file is YAML, a list of segments::

    - name: base             # optional, for reports
      frames: 4000           # > 0
      classes: [0, 1, 2]     # optional, default: all classes of the dataset
      transform:             # optional, default: the frames as the dataset has them
        rotation: 30         # degrees, counter-clockwise
        brightness: 0.6      # factor (1 = unchanged)
        contrast: 0.8        # factor (1 = unchanged)
        noise: 12            # std of additive Gaussian noise, in pixel values (0..255)
        blur: 1.0            # Gaussian blur sigma, px
        occlusion: 0.3       # side of a black square box, as a fraction of the frame side
        tint: [20, 0, -20]   # added to the R, G, B channels
        scale: 0.8           # zoom factor about the centre (1 = unchanged)
        translate: [0.1, 0]  # shift, as fractions of width and height

Frames are chosen and transformed deterministically from one seed: the same seed gives
byte-identical frames.  Only the noise and the occluder's position vary per frame; both come
from a generator seeded by (seed, frame index), so a frame never depends on what came before.
A segment with no transform needs neither torch nor torchvision, so the camera simulator
without a scenario stays light; the geometric and photometric ops are torchvision's
(``transforms.v2.functional``), imported on first use.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

# Shipped scenarios: installed under share/hiertrain_ros/config, or in a source checkout.
SCENARIO_DIRS = (Path(sys.prefix) / "share" / "hiertrain_ros" / "config" / "scenarios",
                 Path(__file__).resolve().parents[2] / "config" / "scenarios")

# Transform fields: (check, what the check says); the order of application is apply_transform's.
_NUMBER_FIELDS = {
    "rotation": (lambda v: -360 <= v <= 360, "in [-360, 360] degrees"),
    "brightness": (lambda v: v >= 0, ">= 0"),
    "contrast": (lambda v: v >= 0, ">= 0"),
    "noise": (lambda v: 0 <= v <= 255, "in [0, 255]"),
    "blur": (lambda v: 0 <= v <= 5, "in [0, 5] px (0 = off)"),
    "occlusion": (lambda v: 0 <= v <= 1, "in [0, 1] (0 = off)"),
    "scale": (lambda v: 0 < v <= 10, "in (0, 10]"),
}
_VECTOR_FIELDS = {
    "tint": (3, lambda v: -255 <= v <= 255, "3 numbers in [-255, 255]"),
    "translate": (2, lambda v: -1 <= v <= 1, "2 numbers in [-1, 1]"),
}
_SEGMENT_FIELDS = ("name", "frames", "classes", "transform")


@dataclass(frozen=True)
class Transform:
    """A domain: identity by default."""

    rotation: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    noise: float = 0.0
    blur: float = 0.0
    occlusion: float = 0.0
    scale: float = 1.0
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translate: tuple[float, float] = (0.0, 0.0)

    @property
    def identity(self) -> bool:
        return self == Transform()

    @property
    def random(self) -> bool:
        return self.noise > 0 or self.occlusion > 0

    @property
    def uses_torch(self) -> bool:
        return (self.rotation, self.scale, self.translate, self.brightness, self.contrast, self.blur) != (
            0, 1, (0, 0), 1, 1, 0)


@dataclass(frozen=True)
class Segment:
    frames: int | None              # None: runs forever (the camera without a scenario)
    classes: tuple[int, ...] | None = None  # None: all classes of the dataset
    transform: Transform = field(default_factory=Transform)
    name: str = ""


@dataclass(frozen=True)
class Scenario:
    segments: tuple[Segment, ...]
    name: str = ""

    @property
    def uses_torch(self) -> bool:
        return any(s.transform.uses_torch for s in self.segments)

    @property
    def frames(self) -> int | None:
        return None if any(s.frames is None for s in self.segments) else sum(s.frames for s in self.segments)


def plain(frames: int | None = None) -> Scenario:
    """Return the stream without a scenario: one segment, all classes, frames as the dataset has them."""
    return Scenario((Segment(frames),))


# -- loading and validation -------------------------------------------------------------------------
def _number(where: str, key: str, value, check, says: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a number, got {value!r}")
    if not check(value):
        raise ValueError(f"{where}: {key} must be {says}, got {value!r}")
    return float(value)


def _transform(where: str, raw) -> Transform:
    if raw is None:
        return Transform()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: transform must be a mapping of {sorted([*_NUMBER_FIELDS, *_VECTOR_FIELDS])}, "
                         f"got {raw!r}")
    values = {}
    for key, value in raw.items():
        if key in _NUMBER_FIELDS:
            values[key] = _number(where, f"transform.{key}", value, *_NUMBER_FIELDS[key])
        elif key in _VECTOR_FIELDS:
            n, check, says = _VECTOR_FIELDS[key]
            if not isinstance(value, (list, tuple)) or len(value) != n:
                raise ValueError(f"{where}: transform.{key} must be {says}, got {value!r}")
            values[key] = tuple(_number(where, f"transform.{key}", v, check, says) for v in value)
        else:
            raise ValueError(f"{where}: unknown transform field {key!r}; known: "
                             f"{', '.join(sorted([*_NUMBER_FIELDS, *_VECTOR_FIELDS]))}")
    return Transform(**values)


def _segment(where: str, raw) -> Segment:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a segment must be a mapping with {', '.join(_SEGMENT_FIELDS)}, got {raw!r}")
    unknown = set(raw) - set(_SEGMENT_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown segment field {sorted(unknown)[0]!r}; known: {', '.join(_SEGMENT_FIELDS)}")
    frames = raw.get("frames")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"{where}: frames must be an integer >= 1, got {frames!r}")
    classes = raw.get("classes")
    if classes is not None:
        if (not isinstance(classes, list) or not classes
                or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes)):
            raise ValueError(f"{where}: classes must be a non-empty list of class ids >= 0, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"{where}: classes has duplicates: {classes!r}")
        classes = tuple(classes)
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise ValueError(f"{where}: name must be a string, got {name!r}")
    return Segment(frames, classes, _transform(where, raw.get("transform")), name)


def parse_scenario(raw, source: str = "scenario") -> Scenario:
    """Return a scenario from the YAML's data (a list of segments), or ValueError naming the bad field."""
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: a scenario must be a non-empty list of segments, got {type(raw).__name__}")
    return Scenario(tuple(_segment(f"{source}: segment {i}", seg) for i, seg in enumerate(raw)), Path(source).stem)


def scenario_path(spec: str) -> Path:
    """Return a path to a YAML file, or the name of a shipped scenario (``domain_shift``)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if not path.is_file():
            raise FileNotFoundError(f"scenario file {path} not found")
        return path
    for folder in SCENARIO_DIRS:
        if (folder / f"{spec}.yaml").is_file():
            return folder / f"{spec}.yaml"
    raise ValueError(f"scenario must be a YAML path or one of {', '.join(shipped()) or '(none found)'}, got {spec!r}")


def shipped() -> list[str]:
    return sorted({p.stem for folder in SCENARIO_DIRS if folder.is_dir() for p in folder.glob("*.yaml")})


def load_scenario(spec: str) -> Scenario:
    import yaml

    path = scenario_path(spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_scenario(raw, str(path))


# -- transforms ------------------------------------------------------------------------------------
def apply_transform(frame: np.ndarray, t: Transform, rng: np.random.Generator | None = None) -> np.ndarray:
    """``frame`` (uint8 H x W x 3) in the domain ``t``.

    Geometry, then light and colour, then blur, noise and occlusion (a sensor's order).  ``rng`` draws the noise and the
    occluder's position.
    """
    if t.identity:
        return frame
    if t.random and rng is None:
        raise ValueError("a transform with noise or occlusion needs an rng")
    out = frame
    if t.uses_torch:
        out = _torchvision_ops(out, t)
    if t.tint != (0.0, 0.0, 0.0) or t.noise:
        shifted = out.astype(np.float32) + np.asarray(t.tint, np.float32)
        if t.noise:
            shifted += rng.normal(0.0, t.noise, size=out.shape).astype(np.float32)
        out = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    if t.occlusion:
        h, w = out.shape[:2]
        bh, bw = max(1, round(t.occlusion * h)), max(1, round(t.occlusion * w))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        out = out.copy() if out is frame else out
        out[top:top + bh, left:left + bw] = 0
    return out


def _torchvision_ops(frame: np.ndarray, t: Transform) -> np.ndarray:
    import torch  # here: the camera simulator without a scenario must not pay for torch
    from torchvision.transforms.v2 import functional as F

    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    h, w = frame.shape[:2]
    if t.rotation:
        x = F.rotate(x, t.rotation, interpolation=F.InterpolationMode.BILINEAR)
    if t.scale != 1 or t.translate != (0.0, 0.0):
        x = F.affine(x, angle=0.0, translate=[round(t.translate[0] * w), round(t.translate[1] * h)], scale=t.scale,
                     shear=[0.0, 0.0], interpolation=F.InterpolationMode.BILINEAR)
    if t.brightness != 1:
        x = F.adjust_brightness(x, t.brightness)
    if t.contrast != 1:
        x = F.adjust_contrast(x, t.contrast)
    if t.blur:
        side = min(2 * math.ceil(3 * t.blur) + 1, (min(h, w) - 1) | 1)  # odd, and no wider than the frame
        x = F.gaussian_blur(x, [side, side], [t.blur, t.blur])
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


# -- the stream ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamFrame:
    frame: np.ndarray   # uint8 H x W x 3, the dataset's size
    label: int
    segment: int        # index into the scenario's segments
    held_out: bool      # a test-set image, published without a label


def stream(scenario: Scenario, train, test, holdout_every: int, seed: int = 0) -> Iterator[StreamFrame]:
    """Return the frames of ``scenario`` from the ``train`` and ``test`` sets (core.data.Frames).

    Every ``holdout_every``-th frame is a test image of the current segment (its classes, its
    transform).  Each class set walks one seeded permutation of its images, so a segment that
    comes back (A, B, A) shows new images, and a one-segment plain scenario is exactly the
    camera simulator's order without scenarios.
    """
    if holdout_every < 1:
        raise ValueError(f"holdout_every must be >= 1, got {holdout_every}")
    for i, seg in enumerate(scenario.segments):
        bad = [c for c in seg.classes or () if c >= train.num_classes]
        if bad:
            raise ValueError(f"scenario {scenario.name or ''} segment {i}: class {bad[0]} is not in the dataset "
                             f"({train.num_classes} classes)")
    # Warm each transform up now: torchvision's import and first calls took 1.4 s, and a camera playing the
    # scenario stalled that long at the first change of domain.
    for seg in scenario.segments:
        if seg.transform.uses_torch:
            apply_transform(train.images[0], seg.transform, np.random.default_rng(0) if seg.transform.random else None)
    return _frames(scenario, train, test, holdout_every, seed)


def _frames(scenario: Scenario, train, test, holdout_every: int, seed: int) -> Iterator[StreamFrame]:
    rng = np.random.default_rng(seed)
    train_order, test_order = rng.permutation(len(train)), rng.permutation(len(test))
    sets = {"train": (train, train_order), "test": (test, test_order)}
    pools: dict = {}  # (split, classes) -> [indices, cursor]

    def take(split: str, classes) -> int:
        key = (split, classes)
        if key not in pools:
            frames, order = sets[split]
            idx = order if classes is None else order[np.isin(frames.labels[order], classes)]
            if not len(idx):
                raise ValueError(f"no {split} images of classes {list(classes)} in the dataset")
            pools[key] = [idx, 0]
        pool = pools[key]
        i = pool[0][pool[1] % len(pool[0])]
        pool[1] += 1
        return int(i)

    sent = 0
    for index, seg in enumerate(scenario.segments):
        n = 0
        while seg.frames is None or n < seg.frames:
            held = (sent + 1) % holdout_every == 0
            split = "test" if held else "train"
            frames, i = sets[split][0], take(split, seg.classes)
            frame_rng = np.random.default_rng((seed, sent)) if seg.transform.random else None
            yield StreamFrame(apply_transform(frames.images[i], seg.transform, frame_rng), int(frames.labels[i]),
                              index, held)
            sent += 1
            n += 1
