# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.maskx-installed
DEMO_DIR ?= data/synth-default
# CI (CI=true) runs the slow checks too; a workstation skips them unless SLOW=1.
PYTEST_SELECT := $(if $(or $(CI),$(SLOW)),,-m "not slow")

.PHONY: demo test app venv bench bench-model bench-app bench-threads bench-all clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m maskx demo --out $(DEMO_DIR)

test: $(STAMP)
	$(if $(CI),bash .ci/install-browser,)
	$(PY) -m pytest -q $(PYTEST_SELECT) $(if $(CI),--durations=20,)

app: $(STAMP)
	$(PY) -m streamlit run app/serve.py -- $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/data_rate.py --out benchmarks/results/data_rate.json

bench-model: $(STAMP)
	$(PY) benchmarks/model_speed.py --out benchmarks/results/model_speed.json

bench-app: $(STAMP)
	$(PY) benchmarks/app_and_3k.py --out benchmarks/results/app_and_3k.json

bench-threads: $(STAMP)
	$(PY) benchmarks/threaded_kernels.py --out benchmarks/results/threaded_kernels.json

# every benchmark, one after another (about 18 minutes on 2 idle cores; stop other work first)
bench-all: bench bench-model bench-app bench-threads

clean-venv:
	rm -rf $(VENV)
