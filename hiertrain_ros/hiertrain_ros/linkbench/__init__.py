"""Link emulation.

Two network namespaces joined by a tbf-shaped veth pair, the edge under a cgroup CPU quota (``netns.py``; ``hiertrain
launch --link`` runs the graph across it).  The link bench that uses it lives in the source tree's
``benchmarks/linkbench``; see ``docs/linkbench.md``.
"""
