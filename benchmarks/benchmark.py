"""Side-by-side benchmark of pvt-hf against transformers and timm: `python benchmarks/benchmark.py --help`.

The same as `pvt-hf benchmark`; the code lives in `pvt_hf.benchmark`. Results: benchmarks/RESULTS.md.
"""

import sys

from pvt_hf.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
