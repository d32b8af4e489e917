# Two commands for a newcomer: `make demo` (set up + run the demo experiment) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: its CPU build installs from local disk in seconds
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pairless run demo --out results

# The headless browser of tests/explore/test_explore_browser.py (Debian packages), installed when missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) -a -x /usr/bin/chromedriver || { \
		echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq >/dev/null && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null || \
		echo "could not install chromium: the browser test will skip (and fail in CI, CI=true)"; }

test: $(STAMP) browser
	$(BIN)/ruff check pairless tests benchmarks scripts
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check pairless tests benchmarks scripts

clean:
	rm -rf $(VENV)
