"""Link bench: hierarchical training against its baselines over an emulated edge->cloud link.

The hierarchical mode runs the package's ``edge_node`` and ``cloud_node``; the baselines
(full-cloud raw/JPEG, split learning, edge-only) are bench workers.  The link emulator
itself ships with the package (``hiertrain_ros.linkbench.netns``, used by
``hiertrain launch --link``).  See ``docs/linkbench.md``.
"""
