# README's commands: `make demo`, `make test` (everything; what CI runs) and `make test-fast` (the subset
# without the tests marked slow: whole extra training runs, campaigns, own Ray heads, fault and load tests).
# All create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

demo: $(STAMP)
	$(PY) -m genai_ray.demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests --durations=20

test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests -m "not slow" --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
