# The two commands of the contract: `make demo` and `make test`. Both set up from scratch.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: setup demo test lint system-deps clean

# torch and torchvision first, pinned: both lie on this disk and torchvision beside any
# other torch fails to import here.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[all,png]'
	touch $(STAMP)

# Chromium lets kaleido export PNG; best effort (HTML export needs nothing).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	  || echo "warning: could not install chromium; PNG export tests will check the error path"; \
	fi

setup: $(STAMP)

demo: setup
	$(VENV)/bin/headscope patch --model llama --out out/demo

# ruff (lint + format) and mypy (on headscope/) first: cheap, and they fail fast.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup system-deps lint
	HEADSCOPE_PROGRESS=0 $(PY) -m pytest -q

clean:
	rm -rf out .pytest_cache
