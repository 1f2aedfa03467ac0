"""Scenarios (streams that change).

Parsing and its errors, each domain transform as specified, seeded byte-identical streams, segment classes, held-out
frames that follow the segment, scenario bags whose labels carry the segment, and (one real-DDS test) the camera
simulator playing a scenario with the segment in its truth and label messages.
"""

import numpy as np
import pytest
import torch
import yaml
from torchvision.transforms.v2 import functional as F
from waiting import wait_for

from hiertrain_ros import bag_files
from hiertrain_ros.ros_common import RECORD_QOS, TOPICS
from hiertrain_ros.runner import Graph, MonitorThread
from hiertrain_ros.core import scenarios
from hiertrain_ros.core.data import Frames
from hiertrain_ros.core.scenarios import Scenario, Segment, Transform, apply_transform, parse_scenario, stream


def _frames(n_per_class: int, value_offset: int, seed: int) -> Frames:
    """Random textured frames whose top-left pixel names the class (for telling train and test apart)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = labels * 20 + value_offset
    return Frames(images, labels.astype(np.int64), 10)


TRAIN, TEST = _frames(20, 0, 1), _frames(5, 1, 2)
FRAME = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _tensor(frame):
    return torch.from_numpy(frame).permute(2, 0, 1)


def _array(x):
    return x.permute(1, 2, 0).numpy()


# -- transforms ------------------------------------------------------------------------------------
def test_identity_returns_the_frame_untouched():
    assert apply_transform(FRAME, Transform()) is FRAME


def test_rotation_is_torchvisions():
    want = _array(F.rotate(_tensor(FRAME), 30.0, interpolation=F.InterpolationMode.BILINEAR))
    np.testing.assert_array_equal(apply_transform(FRAME, Transform(rotation=30)), want)
    # A quarter turn of the square grid moves every pixel exactly: counter-clockwise, as np.rot90.
    np.testing.assert_array_equal(apply_transform(FRAME, Transform(rotation=90)), np.rot90(FRAME))


def test_brightness_scales_the_mean_and_contrast_pulls_to_the_grey_mean():
    dim = apply_transform(FRAME, Transform(brightness=0.5))
    np.testing.assert_allclose(dim.astype(float), np.rint(FRAME * 0.5), atol=1)
    assert dim.mean() == pytest.approx(FRAME.mean() * 0.5, abs=0.5)
    flat = apply_transform(FRAME, Transform(contrast=0.0))
    grey_mean = _tensor(FRAME).float().mul(torch.tensor([0.2989, 0.587, 0.114])[:, None, None]).sum(0).mean()
    assert flat.min() == flat.max() and abs(float(flat[0, 0, 0]) - grey_mean.item()) < 1.5  # uint8 grey, rounded


def test_tint_shifts_each_channel_and_saturates():
    grey = np.full((32, 32, 3), 100, np.uint8)
    out = apply_transform(grey, Transform(tint=(30, 0, -120)))
    assert out[..., 0].min() == out[..., 0].max() == 130
    assert out[..., 1].min() == out[..., 1].max() == 100
    assert out[..., 2].max() == 0  # clipped, not wrapped


def test_noise_has_the_given_spread_and_depends_only_on_the_rng_seed():
    grey = np.full((32, 32, 3), 128, np.uint8)
    a = apply_transform(grey, Transform(noise=10), np.random.default_rng(5))
    diff = a.astype(float) - 128
    assert abs(diff.mean()) < 1 and diff.std() == pytest.approx(10, rel=0.1)
    np.testing.assert_array_equal(a, apply_transform(grey, Transform(noise=10), np.random.default_rng(5)))
    assert not np.array_equal(a, apply_transform(grey, Transform(noise=10), np.random.default_rng(6)))


def test_blur_is_torchvisions_gaussian():
    want = _array(F.gaussian_blur(_tensor(FRAME), [7, 7], [1.0, 1.0]))
    out = apply_transform(FRAME, Transform(blur=1.0))
    np.testing.assert_array_equal(out, want)
    assert out.astype(float).std() < FRAME.astype(float).std() / 2


def test_occlusion_zeros_one_box_of_the_given_size():
    white = np.full((32, 32, 3), 255, np.uint8)
    out = apply_transform(white, Transform(occlusion=0.25), np.random.default_rng(0))
    rows, cols = np.nonzero(out.max(axis=2) == 0)
    assert len(rows) == 8 * 8 and np.ptp(rows) == 7 and np.ptp(cols) == 7  # one 8x8 square
    assert (out > 0).all(axis=2).sum() == 32 * 32 - 64  # and nothing else changed
    with pytest.raises(ValueError, match="rng"):
        apply_transform(white, Transform(occlusion=0.25))


def test_translation_and_scale_are_torchvisions_affine():
    shifted = apply_transform(FRAME, Transform(translate=(0.25, 0.0)))
    np.testing.assert_array_equal(shifted[:, 8:], FRAME[:, :-8])  # 8 px to the right
    assert not shifted[:, :8].any()
    want = _array(F.affine(_tensor(FRAME), angle=0.0, translate=[0, 0], scale=0.5, shear=[0.0, 0.0],
                           interpolation=F.InterpolationMode.BILINEAR))
    small = apply_transform(FRAME, Transform(scale=0.5))
    np.testing.assert_array_equal(small, want)
    assert not small[:8].any() and not small[-8:].any()  # zoomed out: a black border


# -- streams ---------------------------------------------------------------------------------------
SCENARIO = Scenario((
    Segment(40, (0, 1, 2)),
    Segment(30, (7,), Transform(rotation=30, noise=8, occlusion=0.2)),
    Segment(40, (0, 1, 2), Transform(brightness=0.5)),
))


def test_same_seed_byte_identical_other_seed_differs():
    a = list(stream(SCENARIO, TRAIN, TEST, 4, seed=3))
    b = list(stream(SCENARIO, TRAIN, TEST, 4, seed=3))
    c = list(stream(SCENARIO, TRAIN, TEST, 4, seed=4))
    assert len(a) == len(b) == 110
    assert all(x.frame.tobytes() == y.frame.tobytes() and (x.label, x.segment, x.held_out) ==
               (y.label, y.segment, y.held_out) for x, y in zip(a, b))
    assert any(x.frame.tobytes() != y.frame.tobytes() for x, y in zip(a, c))


def test_segments_classes_and_held_out_frames_follow_the_segment():
    items = list(stream(SCENARIO, TRAIN, TEST, 4, seed=0))
    assert [it.segment for it in items] == [0] * 40 + [1] * 30 + [2] * 40
    assert [it.held_out for it in items] == [(i + 1) % 4 == 0 for i in range(110)]
    for it in items:
        assert it.label in SCENARIO.segments[it.segment].classes
        # The frame is a transformed image of the right split and class: find its source.
        source = TEST if it.held_out else TRAIN
        t = SCENARIO.segments[it.segment].transform
        if t.random:
            continue  # noise and occluder drawn per frame: checked below
        candidates = source.images[source.labels == it.label]
        assert any(np.array_equal(apply_transform(img, t), it.frame) for img in candidates)
    # The random segment's frames are the seeded transform of a test/train image of class 7.
    assert {it.label for it in items if it.segment == 1} == {7}


def test_a_recurring_segment_shows_new_images():
    a = Segment(10, (3,))  # 20 train images of class 3: room for two visits without repeats
    items = list(stream(Scenario((a, Segment(10, (4,)), a)), TRAIN, TEST, 1000))
    first, again = items[:10], items[20:]
    assert {f.frame.tobytes() for f in first}.isdisjoint({f.frame.tobytes() for f in again})


def test_plain_stream_is_the_camera_order_without_scenarios():
    """One plain segment reproduces the camera simulator's order before scenarios existed."""
    rng = np.random.default_rng(7)
    train_order, test_order = rng.permutation(len(TRAIN)), rng.permutation(len(TEST))
    held = 0
    for sent, it in enumerate(stream(scenarios.plain(50), TRAIN, TEST, 5, seed=7)):
        if (sent + 1) % 5 == 0:
            i, src = test_order[held % len(TEST)], TEST
            held += 1
        else:
            i, src = train_order[(sent - held) % len(TRAIN)], TRAIN
        assert np.array_equal(it.frame, src.images[i]) and it.label == src.labels[i] and it.segment == 0


# -- files and their errors ------------------------------------------------------------------------
def test_shipped_scenarios():
    assert {"class_incremental", "domain_shift", "recurring"} <= set(scenarios.shipped())
    ci = scenarios.load_scenario("class_incremental")
    assert [s.classes for s in ci.segments] == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    ds = scenarios.load_scenario("domain_shift")
    assert [s.transform.identity for s in ds.segments] == [True, False, True]
    assert ds.segments[1].transform.rotation != 0 and ds.segments[1].transform.brightness < 1
    rec = scenarios.load_scenario("recurring")
    assert [s.name for s in rec.segments] == ["A", "B", "A", "B"]
    assert rec.segments[0] == rec.segments[2] and rec.segments[1] == rec.segments[3] != rec.segments[0]
    for sc in (ci, ds, rec):
        assert sc.frames == 12000  # two minutes of the 100 Hz camera simulator


@pytest.mark.parametrize("raw, message", [
    ({"frames": 10}, "non-empty list of segments"),
    ([], "non-empty list of segments"),
    ([{"frames": 0}], r"segment 0: frames must be an integer >= 1, got 0"),
    ([{"frames": 10}, {"classes": [1]}], r"segment 1: frames must be an integer >= 1, got None"),
    ([{"frames": 1.5}], "frames must be an integer"),
    ([{"frames": 10, "clases": [1]}], "unknown segment field 'clases'"),
    ([{"frames": 10, "classes": []}], "classes must be a non-empty list"),
    ([{"frames": 10, "classes": [1, -2]}], "classes must be a non-empty list of class ids >= 0"),
    ([{"frames": 10, "classes": [1, 1]}], "classes has duplicates"),
    ([{"frames": 10, "transform": {"rotate": 30}}], "unknown transform field 'rotate'"),
    ([{"frames": 10, "transform": {"rotation": "a lot"}}], "transform.rotation must be a number"),
    ([{"frames": 10, "transform": {"brightness": -1}}], r"transform.brightness must be >= 0, got -1"),
    ([{"frames": 10, "transform": {"occlusion": 2}}], r"transform.occlusion must be in \[0, 1\]"),
    ([{"frames": 10, "transform": {"tint": [10, 0]}}], "transform.tint must be 3 numbers"),
    ([{"frames": 10, "transform": {"translate": [0, 5]}}], r"transform.translate must be 2 numbers in \[-1, 1\]"),
    ([{"frames": 10, "transform": [30]}], "transform must be a mapping"),
    ([{"frames": 10, "name": 3}], "name must be a string"),
])
def test_bad_scenario_names_the_field(tmp_path, raw, message):
    with pytest.raises(ValueError, match=message):
        parse_scenario(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=f"bad.yaml: .*{message}"):
        scenarios.load_scenario(str(path))


def test_bad_names_files_and_classes(tmp_path):
    with pytest.raises(ValueError, match="one of class_incremental, domain_shift, recurring.*got 'no_such'"):
        scenarios.load_scenario("no_such")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        scenarios.load_scenario(str(tmp_path / "missing.yaml"))
    (tmp_path / "broken.yaml").write_text("- frames: [1\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        scenarios.load_scenario(str(tmp_path / "broken.yaml"))
    with pytest.raises(ValueError, match="segment 1: class 12 is not in the dataset"):
        next(stream(Scenario((Segment(5), Segment(5, (12,)))), TRAIN, TEST, 5))


# -- bags ------------------------------------------------------------------------------------------
def test_scenario_bag_labels_carry_the_segment(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump([{"frames": 12, "classes": [0, 1]},
                                    {"frames": 8, "classes": [2], "transform": {"brightness": 0.5}}]))
    summary = bag_files.make_bag(tmp_path / "bag", subset=0, holdout_every=4, start_ns=10**18, scenario=str(spec))
    assert (summary["frames"], summary["held_out"], summary["segments"]) == (20, 5, 2)
    expected = list(bag_files.scenario_frames("fashion-mnist", 0, 4, 0, str(spec)))
    images, labels = [], []
    for topic, msgtype, _, raw in bag_files.read_messages(tmp_path / "bag"):
        (images if topic == bag_files.TOPIC_IMAGE else labels).append((topic, bag_files.deserialize(raw, msgtype)))
    for (_, image), (topic, label), want in zip(images, labels, expected):
        assert bytes(image.data) == want.frame.tobytes()
        assert (label.class_id, label.segment) == (want.label, want.segment)
        assert topic == (bag_files.TOPIC_TRUTH if want.held_out else bag_files.TOPIC_LABELS)
    assert [lbl.segment for _, lbl in labels] == [0] * 12 + [1] * 8
    assert {lbl.class_id for _, lbl in labels[12:]} == {2}
    with pytest.raises(ValueError, match="got 'no_such'"):
        bag_files.make_bag(tmp_path / "none", scenario="no_such")
    assert not (tmp_path / "none").exists()  # refused before the bag is created


# -- the camera simulator on real DDS --------------------------------------------------------------
@pytest.mark.system
def test_camera_sim_plays_a_scenario_and_truth_carries_the_segment(ros_env, tmp_path):
    from hiertrain_interfaces.msg import Label

    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump([{"frames": 300, "classes": [0, 1]},
                                    {"frames": 300, "classes": [2, 3], "transform": {"rotation": 90}}]))
    graph = Graph(("camera_sim",), log_dir=tmp_path / "logs",
                  overrides={"camera_sim": {"scenario": str(spec), "rate_hz": 100.0, "holdout_every": 3}})
    monitor = MonitorThread()
    got = {"truth": [], "labels": []}
    for topic in got:
        monitor.node.create_subscription(Label, "/" + TOPICS[topic], lambda m, t=topic: got[t].append(m), RECORD_QOS)
    log = tmp_path / "logs" / "camera_sim.log"
    graph.start()
    try:
        wait_for(lambda: log.exists() and "done: " in log.read_text(), 90, "the scenario to play to its end",
                 lambda: f"({len(got['truth'])} truth, {len(got['labels'])} labels so far)")
        wait_for(lambda: got["truth"] and got["truth"][-1].segment == 1, 10, "the last truth messages")
    finally:
        codes = graph.stop()
        monitor.close()
    assert codes["camera_sim"] == 0
    assert "done: 600 frames, 200 held out" in log.read_text()
    for topic, msgs in got.items():
        segments = [m.segment for m in msgs]
        assert segments == sorted(segments) and set(segments) == {0, 1}, topic  # late joiners may miss a few
        assert all(m.class_id in ((0, 1), (2, 3))[m.segment] for m in msgs), topic
