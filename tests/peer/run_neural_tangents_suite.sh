#!/usr/bin/env bash
# Runs neural-tangents 0.6.5's own tests/predict_test.py (with its tests/test_utils.py)
# against tangentflow.compat.neural_tangents, with only its import line changed to
#     from tangentflow.compat import neural_tangents as predict
# Expected: the same as on neural-tangents itself, "35 passed, 1 skipped".
#
# Not part of the default test suite (it needs network access to PyPI and ~3 minutes).
# Usage, from the repository root:
#     bash tests/peer/run_neural_tangents_suite.sh [extra pytest arguments]
# Environment:
#     PEER_VENV        venv to create/reuse (default: .peer-venv, ignored by git)
#     PEER_PYTHON      interpreter for the venv (default: python3)
#     TANGENTFLOW_FROM "develop" (default when python/tangentflow/_core*.so exists: the
#                      package is put on PYTHONPATH) or "wheel" (build a wheel with
#                      maturin and install it into the venv)
# The venv gets the pinned versions jax==0.4.30 jaxlib==0.4.30 numpy==2.2.6 scipy==1.13.1
# (all on PyPI for Python 3.11), absl-py, frozendict and pytest<9 (pytest 9 reports
# unittest subtests separately, which changes the summary line). neural-tangents is
# installed --no-deps from its sdist (which ships tests/), with its `experimental` import
# (TensorFlow, tf2jax) made optional in the venv's copy. Nothing of neural-tangents is
# kept in this repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PEER_VENV:-$ROOT/.peer-venv}"
PY="${PEER_PYTHON:-python3}"
NT_VERSION=0.6.5
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tf-peer.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q jax==0.4.30 jaxlib==0.4.30 numpy==2.2.6 scipy==1.13.1 \
  absl-py frozendict "pytest>=8,<9"

# neural-tangents from its sdist, experimental (TensorFlow) import made optional
"$VPY" -m pip download -q --no-deps --no-binary :all: "neural-tangents==$NT_VERSION" -d "$WORK/sdist"
tar -xzf "$WORK/sdist/neural-tangents-$NT_VERSION.tar.gz" -C "$WORK"
SRC="$WORK/neural-tangents-$NT_VERSION"
"$VPY" - "$SRC/neural_tangents/__init__.py" <<'EOF'
import sys
path = sys.argv[1]
src = open(path).read()
old = "from . import experimental\n"
new = (
    "try:\n"
    "  from . import experimental\n"
    "except ImportError:  # needs TensorFlow and tf2jax\n"
    "  experimental = None\n"
)
assert src.count(old) == 1, "unexpected neural_tangents/__init__.py"
open(path, "w").write(src.replace(old, new))
EOF
"$VPY" -m pip install -q --no-deps "$SRC"

# tangentflow: the built extension on the path, or a wheel
MODE="${TANGENTFLOW_FROM:-}"
if [ -z "$MODE" ]; then
  if compgen -G "$ROOT/python/tangentflow/_core*.so" > /dev/null; then MODE=develop; else MODE=wheel; fi
fi
if [ "$MODE" = wheel ]; then
  "$VPY" -m pip install -q "maturin>=1.14,<2"
  (cd "$ROOT" && "$VENV/bin/maturin" build --release --out "$WORK/wheels")
  "$VPY" -m pip install -q --no-deps --force-reinstall "$WORK"/wheels/tangentflow-*.whl
  export PYTHONPATH=""
else
  export PYTHONPATH="$ROOT/python"
fi

# the two test files, only the import line changed
mkdir -p "$WORK/run/tests"
cp "$SRC/tests/predict_test.py" "$SRC/tests/test_utils.py" "$WORK/run/tests/"
touch "$WORK/run/tests/__init__.py"
"$VPY" - "$WORK/run/tests/predict_test.py" <<'EOF'
import sys
path = sys.argv[1]
src = open(path).read()
old = "from neural_tangents import predict, stax\n"
new = "from neural_tangents import stax; from tangentflow.compat import neural_tangents as predict\n"
assert src.count(old) == 1, "unexpected import line in predict_test.py"
open(path, "w").write(src.replace(old, new))
EOF
diff "$SRC/tests/predict_test.py" "$WORK/run/tests/predict_test.py" || true

cd "$WORK/run"
"$VPY" -c "import jax, numpy, scipy, neural_tangents, tangentflow.compat.neural_tangents as m; \
print('jax', jax.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, \
'neural-tangents', neural_tangents.__version__, 'compat', m.__file__)"
"$VPY" -m pytest -q -p no:cacheprovider tests/predict_test.py "$@"
