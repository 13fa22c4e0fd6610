"""End-to-end Predictor benchmark (the same code as ``tangentflow bench``).

env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bench_predict.py --sizes 1000,2000
"""

import sys

from tangentflow.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
