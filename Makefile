# One entry point, the same commands locally and in CI (.ci/run calls these targets).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: all venv dev wheel install test test-rust test-python lint typecheck stubtest demo bench bench-rust clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(PY)

# Editable development build (fast profile, no LTO).
dev: venv
	$(PIP) install -q maturin "numpy>=1.24"
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --profile dev-opt

# The release wheel (abi3, CPython >= 3.10) into target/wheels/.
wheel: venv
	$(PIP) install -q maturin
	rm -f target/wheels/tangentflow-*.whl
	$(VENV)/bin/maturin build --release --out target/wheels

# Installs the built wheel (not editable) with the test and scale (Dask, Zarr) extras.
install: wheel
	$(PIP) install -q --force-reinstall --no-deps target/wheels/tangentflow-*.whl
	$(PIP) install -q "$$(ls target/wheels/tangentflow-*.whl)[test,scale]"

test-rust:
	cargo test --workspace --exclude tangentflow-py

test-python:
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider

# The test command of the README: builds and installs the wheel, then runs every test.
test: install test-rust test-python

lint: venv
	$(PIP) install -q ruff mypy
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches

# mypy --strict over python/tangentflow (settings and per-module exceptions: [tool.mypy] in
# pyproject.toml); the extension is checked through its stubs, python/tangentflow/_core.pyi.
typecheck: venv
	$(PIP) install -q mypy
	$(PY) -m mypy

# The hand-written stubs of the extension against the installed module (after install).
stubtest: venv
	$(PIP) install -q mypy
	$(PY) -m mypy.stubtest tangentflow._core --allowlist .ci/stubtest-allowlist.txt

# The main job: installs the package with its demo extras and runs the demo.
demo: install
	$(PIP) install -q "$$(ls target/wheels/tangentflow-*.whl)[demo]"
	$(VENV)/bin/tangentflow demo --plot learning_curve.png

bench: install
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_predict.py

bench-rust:
	cargo bench --bench core

clean:
	rm -rf $(VENV) target/wheels
