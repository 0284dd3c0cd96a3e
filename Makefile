# README's commands: `make demo`, `make test` (everything; what CI runs; under 40 minutes on 2 cores) and
# `make test-fast` (under 5 minutes on 2 cores). test-fast leaves out the tests marked slow: every whole training
# run (test_train's 2-worker runs, test_data_scale, test_learning, test_reliability), every tuning campaign
# (test_tune, test_tune_inline's), every test that starts its own Ray or Ray head (test_ray_secrets,
# test_cluster_jobs, test_serve_deploy, a failed `cluster up`), fault tests (SIGKILLed workers, drivers and
# replicas, S3 faults, a deploy that fails to load), load tests against Serve (overload, autoscaling, hot
# reloads, batching under 32 clients), 4 of the 5 one-vs-two-replica checks, and 14 of the 16 cases of each
# residual-family size matrix. It keeps the units, the CLI, data, evaluation, Ray Train's settings and the
# endpoint's API, batching and gallery over HTTP.
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
