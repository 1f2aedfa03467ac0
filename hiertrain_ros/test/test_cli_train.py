import json

import pytest

from hiertrain_ros.cli import main
from hiertrain_ros.core.data import FASHION_MNIST_DIR

pytestmark = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="dataset-fashion-mnist not installed")


@pytest.mark.parametrize("mode,keys", [("hierarchical", {"final_accuracy", "early_exit_accuracy"}),
                                       ("full-cloud", {"accuracy"})])
def test_train_verb_reports_accuracy(tmp_path, capsys, mode, keys):
    out = tmp_path / "r.json"
    assert main(["train", "--mode", mode, "--width", "0.0625", "--subset", "64", "--test-subset", "64",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert keys <= set(result) and all(0 <= result[k] <= 1 for k in keys)
    assert "accuracy" in capsys.readouterr().out


def test_train_verb_rejects_unknown_data():
    assert main(["train", "--data", "imagenet", "--subset", "8"]) == 2
