# Two commands do all the set-up: `make build` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# CPU torch by default; override for CUDA, e.g. make build TORCH=torch==2.13.0+cu126 TORCH_PIP_ARGS="--extra-index-url URL"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# make test spreads the test modules over this many processes (pytest-xdist; a module's tests share one,
# and so its fixtures): auto is one per CPU, at most 4; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto
ARGS ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Exact versions of every dependency but torch, used as pip constraints; `make lock` regenerates it.
LOCK := requirements.lock

.PHONY: build test install lock chromium slurm check render serve bench-compute bench-cold bench-memory bench-site bench-browser golden clean

build: $(STAMP)
	$(VENV)/bin/sae-atlas build $(ARGS)

test: $(STAMP) chromium slurm
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile $(ARGS)

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(LOCK) "$(TORCH)" $(TORCH_PIP_ARGS)
	$(PIP) install --quiet -c $(LOCK) -e ".[compute,test]"
	touch $@

# Re-resolve every dependency from pyproject.toml in a temporary venv and pin the result.
lock:
	$(PYTHON) tools/lock.py --torch "$(TORCH)" --torch-pip-args "$(TORCH_PIP_ARGS)" --out $(LOCK)

# Headless Chromium for the browser tests (Playwright drives it): a Chromium already installed, else the
# system package where apt-get exists (Debian, Ubuntu), else Playwright's own build of Chromium.
chromium: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	  else \
	    $(PY) -m playwright install chromium; \
	  fi; }

# Slurm and munge for tests/test_slurm.py, which starts a single-node cluster (as root): the Debian
# packages where apt-get exists; elsewhere install Slurm's daemons and munge yourself.
slurm:
	@command -v slurmctld >/dev/null 2>&1 || test -x /usr/sbin/slurmctld || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slurm-wlm munge; \
	  else \
	    echo "make: tests/test_slurm.py needs slurmctld, slurmd, sbatch and munged; install Slurm and munge" >&2; \
	  fi; }

check: $(STAMP)
	$(VENV)/bin/sae-atlas check $(ARGS)

render: $(STAMP)
	$(VENV)/bin/sae-atlas render $(ARGS)

serve: $(STAMP)
	$(VENV)/bin/sae-atlas serve $(ARGS)

bench-compute: $(STAMP)
	$(PY) bench/compute_vs_saedashboard.py $(ARGS)

bench-cold: $(STAMP)
	$(PY) bench/cold_compute.py $(ARGS)

bench-memory: $(STAMP)
	$(PY) bench/memory_bound.py $(ARGS)

bench-site: $(STAMP)
	$(PY) bench/synthetic_release.py $(ARGS)

bench-browser: $(STAMP) chromium
	$(PY) bench/browser_speed.py $(ARGS)

# Regenerate the committed expected output of the golden-site test.
golden: $(STAMP)
	$(PY) -m tests.golden --update

clean:
	rm -rf build
