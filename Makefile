# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
# Each creates/updates .venv from the project's own files; nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARCH   := $(shell uname -m)
# torch: the CUDA build pinned on x86_64 (pip takes it from this workplace's disk when it lies there),
# a CPU build on aarch64. --no-cache-dir: the CUDA build's ~4 GB of nvidia wheels would otherwise be
# kept a second time in pip's cache (a CI run once failed with "No space left on device" here).
ifeq ($(ARCH),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: quickstart test check clean-venv browser

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-cache-dir $(TORCH)
	$(PY) -m pip install -q --no-cache-dir -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# data -> nano VLM (built once, cached) -> DPO -> base vs tuned report; ~13 min on 2 CPU cores
quickstart: $(STAMP)
	$(VENV)/bin/vlmdpo quickstart -o runs/quickstart

# The studio's browser tests drive the system Chromium (Debian's package); installed here where missing.
browser:
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
