r"""Link bench.

Hierarchical training (the package's own nodes) against its baselines on one emulated edge->cloud link; see
docs/linkbench.md.  Needs root (namespaces, tc, cgroups):

    sudo .venv/bin/python benchmarks/link_bench.py --model vgg16 --position 3 --link 3g --samples 512 \\
         --edge-cpu-quota 0.3 --json out.json [--plot DIR] [--modes hierarchical fullcloud-raw ...]
"""

import sys

from linkbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
