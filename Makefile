# Two entry points a fresh machine needs: `make demo` and `make test`.
# Both create the virtual environment on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/stt: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/stt

.PHONY: demo test lint bench
demo: $(BIN)/stt
	$(BIN)/stt demo

test: $(BIN)/stt
	$(BIN)/ruff check .
	$(BIN)/mypy stt_core stt_anyio stt_asyncio_compat
	$(BIN)/pytest

lint: $(BIN)/stt
	$(BIN)/ruff check .
	$(BIN)/mypy stt_core stt_anyio stt_asyncio_compat

# The documentation site (mkdocs.yml): warnings are errors; output in site/.
.PHONY: docs
$(BIN)/mkdocs: pyproject.toml $(BIN)/stt
	$(BIN)/pip install -q -e '.[docs]'
	touch $(BIN)/mkdocs

docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
