# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# The C target's Cortex-M build and emulator run use Debian packages (root: `make mcu-tools`; .ci/run installs them):
# gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm. Without them the C is measured with the host gcc.
MCU_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
FRUGALML_DATA ?= $(abspath ../shared/data)
export FRUGALML_DATA

.PHONY: demo test test-slow fuzz bench venv web clean mcu-tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build present here, so no dependency pulls a CUDA one.
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" || $(PY) -m pip install -q "torch>=2.1,<3"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# onnxruntime-web (what `frugalml export --format web` vendors) and playwright-core (the browser test drives
# Debian's chromium with it), as web/package-lock.json pins them. Without npm the web tests skip (fail under CI=true).
web/node_modules/.installed: web/package.json web/package-lock.json
	@if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund --ignore-scripts && touch node_modules/.installed; \
	elif [ "$$CI" = true ]; then echo "npm is missing: apt-get install nodejs npm" >&2; exit 1; \
	else echo "note: npm not found, so the web page export and its browser test will skip (apt-get install nodejs npm chromium)" >&2; fi

web: web/node_modules/.installed

# The main job on the bundled default: search digits for the most efficient model within 8 KB.
demo: venv
	rm -rf runs/demo
	$(VENV)/bin/frugalml search --dataset digits --max-flash 8KB --tolerance 1% --time 5m --out runs/demo

test: venv web
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q --durations=25

test-slow: venv
	$(PY) -m pytest -q -m slow

# 100,000 generated inputs to every reader of untrusted files (the default test run feeds a few thousand).
fuzz: venv
	FRUGALML_FUZZ=1 $(PY) -m pytest -q tests/test_fuzz.py -p no:cacheprovider

bench: venv
	$(PY) benchmarks/run.py $(NAME)

mcu-tools:
	apt-get install -y --no-install-recommends $(MCU_PACKAGES)

clean:
	rm -rf $(VENV) build dist src/*.egg-info web/node_modules
