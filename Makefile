# The three commands of the README.
PY ?= python3
VENV ?= .venv

.PHONY: install run test
install:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e ".[test]"

run:
	HF_HUB_OFFLINE=1 $(VENV)/bin/jaxvlm run

test:
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -n 2 --dist worksteal --durations=20 tests
