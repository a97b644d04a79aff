"""The whole text2music run, phase by phase, MLX beside the PyTorch reference: `mlx-acestep bench`.

    python benchmarks/bench_pipeline.py --random-weights --durations 30,120          # real size, random weights
    python benchmarks/bench_pipeline.py --random-weights --precisions float32,q8,q4
    python benchmarks/bench_pipeline.py --tiny --durations 10                        # checks that it runs

All options: `mlx-acestep bench --help`. The code is `mlx_acestep/benchmark.py`, so an installed
package can run it without this checkout.
"""

import sys

from mlx_acestep.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
