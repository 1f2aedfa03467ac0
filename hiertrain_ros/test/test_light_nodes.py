import subprocess
import sys


def test_fallback_and_camera_do_not_import_torch():
    """A torch import costs ~1 GB RSS with the CUDA wheels; nodes that do no learning must not pay it."""
    code = ("import sys, hiertrain_ros.fallback_node, hiertrain_ros.camera_sim\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
