"""Link bench: hierarchical training against its baselines over an emulated edge->cloud link.

Real ROS 2 processes in two network namespaces joined by a tbf-shaped veth pair,
the edge under a cgroup CPU quota; see ``docs/linkbench.md``.
"""
