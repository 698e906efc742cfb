# Two entry points a fresh machine needs: `make demo` and `make test`.
# Both create the virtual environment on first use.
# PY and VENV may be overridden to run the suite on another interpreter, e.g.
# `make test PY=python3.13 VENV=.venv-3.13` (CI does so for every CPython it finds).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/stt: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/stt

.PHONY: demo test test-suite lint bench compile clean-compiled test-compiled
demo: $(BIN)/stt
	$(BIN)/stt demo

# The linters, then the suite (in that order: make runs prerequisites left to right).
test: lint test-suite

# The suite alone (no linters), for another interpreter: ruff and mypy check the
# source, which does not change with the interpreter that runs it.
test-suite: $(BIN)/stt
	$(BIN)/pytest

# The mypyc-compiled core, built in place (setup.py lists the modules). While the
# extension files exist every run imports them; `make clean-compiled` goes back to
# pure Python. The test header says which one ran.
compile: $(BIN)/stt $(BIN)/.compile-deps
	STT_COMPILE=1 $(BIN)/python setup.py -q build_ext --inplace

# mypyc and setuptools where the build runs: a venv of Python 3.12 or newer has
# no setuptools of its own, so `setup.py` would not even import there.
$(BIN)/.compile-deps: pyproject.toml $(BIN)/stt
	$(BIN)/pip install -q -e '.[compile]'
	touch $@

clean-compiled:
	rm -f stt_core/*.so
	rm -rf build/temp.* build/lib.* build/__native*

# The whole suite again on the compiled core (CI runs this after `make test`).
test-compiled: compile
	STT_REQUIRE_COMPILED=1 $(BIN)/pytest

lint: $(BIN)/stt
	$(BIN)/ruff check .
	$(BIN)/mypy stt_core stt_anyio stt_asyncio_compat tests fuzz

# The documentation site (mkdocs.yml): warnings are errors; output in site/.
.PHONY: docs
$(BIN)/mkdocs: pyproject.toml $(BIN)/stt
	$(BIN)/pip install -q -e '.[docs]'
	touch $(BIN)/mkdocs

docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
