"""Privacy per split (L2S §III-C; core.privacy, core.inversion): the KL score, the privacy field, the floor."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from hiertrain_ros.cli import main
from hiertrain_ros.core.archs import SplitSpec
from hiertrain_ros.core.data import FASHION_MNIST_DIR, Frames
from hiertrain_ros.core.inversion import inversion_decoder, kl_divergence, split_privacy, train_reference
from hiertrain_ros.core.privacy import PrivacyConfig, allowed_positions, privacy_by_position

needs_data = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")

# Seconds, not minutes: a few dozen frames, one epoch of everything, the narrowest VGG-16.
TINY = ["--width", "0.0625", "--privacy-train-images", "96", "--privacy-held-out", "48",
        "--privacy-reference-epochs", "1", "--privacy-decoder-epochs", "1"]


def test_kl_is_zero_for_identical_outputs_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(16, 10) * 3
    assert torch.allclose(kl_divergence(logits, logits), torch.zeros(16), atol=1e-6)
    assert torch.allclose(kl_divergence(logits, logits + 5.0), torch.zeros(16), atol=1e-5)  # same softmax
    other = torch.randn(16, 10) * 3
    assert (kl_divergence(logits, other) > 0).all()
    with pytest.raises(ValueError, match="logits of one shape"):
        kl_divergence(logits, other[:, :5])


@pytest.mark.parametrize("size", [32, 16, 8, 4, 2])
def test_inversion_decoder_maps_any_split_back_to_a_frame(size):
    out = inversion_decoder((5, size, size))(torch.rand(2, 5, size, size))
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1


def test_parsers_and_the_floor_need_no_torch():
    code = ("import sys; from hiertrain_ros.cli import build_parser; build_parser(); "
            "import hiertrain_ros.core.privacy; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_and_profile_are_checked():
    with pytest.raises(ValueError, match="train_images"):
        PrivacyConfig(train_images=0)
    with pytest.raises(ValueError, match="no privacy per position"):
        privacy_by_position({"rows": [{"position": 1}]})
    row = {"position": 1, "privacy": 0.5, "arch": "vgg16", "width": 0.25, "bits": 4, "budget_bits": 16384}
    assert privacy_by_position({"rows": [row]}, SplitSpec(width=0.25, split_point=1)) == {1: 0.5}
    with pytest.raises(ValueError, match="privacy profile is of"):
        privacy_by_position({"rows": [row]}, SplitSpec(width=0.25, split_point=1, bits=8))
    with pytest.raises(ValueError, match=r"no privacy value for positions \[2\]"):
        allowed_positions([1, 2], {1: 0.5}, 0.1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread per test process: on a shared 2-core machine, more make these small networks slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_seeded_measurement_repeats_exactly():
    rng = np.random.default_rng(0)
    frames = Frames(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 40), 10)
    config = PrivacyConfig(train_images=32, held_out=8, reference_epochs=1, decoder_epochs=1, batch_size=8)
    spec = SplitSpec(width=0.0625, split_point=5)
    train, test = frames.subset(32), Frames(frames.images[32:], frames.labels[32:], 10)
    first, second = (split_privacy(spec, train_reference(train, config), train, test, config) for _ in range(2))
    assert first.privacy == second.privacy and first.reconstruction_mse == second.reconstruction_mse
    assert first.feature_shape == spec.feature_shape and first.privacy >= 0


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """``hiertrain profile --privacy`` on a tiny budget: (JSON path, its content)."""
    path = tmp_path_factory.mktemp("privacy") / "profile.json"
    assert main(["profile", "--model", "vgg16", "--privacy", *TINY, "--json", str(path)]) == 0
    return path, json.loads(path.read_text())


@needs_data
def test_profile_writes_privacy_per_position_and_documents_the_method(profile, capsys):
    _, data = profile
    assert [r["position"] for r in data["rows"]] == list(range(1, 13))
    assert all(r["privacy"] >= 0 and r["reconstruction_mse"] >= 0 for r in data["rows"])
    method = data["privacy"]
    assert "KL" in method["method"] and "He et al." in method["decoder"]["attack"]
    assert method["train_images"] == 96 and method["held_out"] == 48 and method["blind_kl"] > 0
    shallow, deep = data["rows"][0]["privacy"], data["rows"][-1]["privacy"]
    print(f"tiny-budget privacy: position 1 {shallow:.4g}, position 12 {deep:.4g} nats")  # reported, not asserted


@needs_data
def test_the_privacy_floor_is_never_violated(profile, tmp_path, capsys):
    path, data = profile
    privacy = privacy_by_position(data, SplitSpec(width=0.0625, split_point=1))
    positions = sorted(privacy)
    values = sorted(privacy.values())
    floors = [0.0, *values, *((a + b) / 2 for a, b in zip(values, values[1:]))]
    for floor in floors:
        kept = allowed_positions(positions, privacy, floor)
        assert kept and all(privacy[p] >= floor for p in kept)
        assert set(kept) == {p for p in positions if privacy[p] >= floor}  # and nothing allowed is removed
    with pytest.raises(ValueError, match="no split has privacy"):
        allowed_positions(positions, privacy, values[-1] + 1e-3)

    # The verbs that choose positions respect it too.
    floor = values[len(values) // 2]
    out = tmp_path / "estimate.json"
    assert main(["estimate", "--model", "vgg16", "--width", "0.0625", "--reps", "1", "--warmup", "0",
                 "--privacy-floor", str(floor), "--privacy-json", str(path), "--json", str(out)]) == 0
    estimated = [e["position"] for e in json.loads(out.read_text())["estimates"]]
    assert estimated and all(privacy[p] >= floor for p in estimated)
    assert set(estimated) == {p for p in positions if privacy[p] >= floor}
    plan = tmp_path / "plan.json"
    assert main(["plan", "--model", "vgg16", "--width", "0.0625", "--subset", "32", "--test-subset", "32",
                 "--reps", "1", "--warmup", "0", "--privacy-floor", str(floor), "--privacy-json", str(path),
                 "--json", str(plan)]) == 0
    result = json.loads(plan.read_text())["plan"]
    assert privacy[result["chosen"]] >= floor and all(privacy[p] >= floor for p in result["positions"])
    capsys.readouterr()
    assert main(["estimate", "--model", "vgg16", "--width", "0.0625", "--privacy-floor", str(values[-1] + 1),
                 "--privacy-json", str(path)]) == 2
    assert "leaves no position" in capsys.readouterr().err
    assert main(["estimate", "--model", "vgg16", "--width", "0.25", "--privacy-floor", "0",
                 "--privacy-json", str(path)]) == 2  # a profile of another width scores other features
    assert main(["estimate", "--model", "vgg16", "--privacy-floor", "0"]) == 2  # no scores given
