import subprocess
import sys


def test_fallback_and_camera_do_not_import_torch():
    """A torch import costs ~1 GB RSS with the CUDA wheels.

    Nodes that do no learning must not pay it. The camera's stream without a scenario, or with one that only changes
    classes, needs no torch either (only torchvision transforms do).
    """
    code = ("import sys, hiertrain_ros.fallback_node, hiertrain_ros.camera_sim\n"
            "from hiertrain_ros.core.data import Frames\n"
            "from hiertrain_ros.core.scenarios import load_scenario, plain, stream\n"
            "import numpy as np\n"
            "data = Frames(np.zeros((10, 32, 32, 3), np.uint8), np.arange(10), 10)\n"
            "for sc in (plain(20), load_scenario('class_incremental')):\n"
            "    assert not sc.uses_torch\n"
            "    assert len(list(stream(sc, data, data, 5))) == sc.frames\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
