"""ROS-free core: models, codec, trainers, costs and data.

Everything here imports only torch, torchvision, numpy, scipy and the standard
library, so the nodes, the CLI and the benchmarks share one implementation.
"""
