# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
EXTRAS := train,s3,samples,test,lint

.PHONY: demo test lint venv bench clean system-packages docs-screenshot

# Debian packages the tests and the demo use, one list: chromium and its driver for the dashboard's
# browser tests and `make docs-screenshot`; xfsprogs (mkfs.xfs) for the loop-mounted XFS image of
# tests/test_reflink.py. Installed with apt-get only when missing (as root, or with sudo); where that
# cannot be done those tests skip (LIN_REQUIRE_BROWSER=1 and LIN_REQUIRE_LOOP=1 make them fail).
SYSTEM_PACKAGES := chromium chromium-driver xfsprogs

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[$(EXTRAS)]'
	$(PY) -m compileall -q lineagestore  # bytecode now, as pip does for installed packages
	touch $(STAMP)

venv: $(STAMP)

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	    echo "note: no apt-get here; install $$(echo $$missing) yourself (the browser and XFS tests skip without them)"; exit 0; fi; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	echo "installing $$(echo $$missing) with apt-get"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing \
	    || echo "warning: could not install $$(echo $$missing); the browser and XFS tests will skip"

demo: $(STAMP) system-packages
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

# docs/img/report.png: the report of the demo store (run `make demo` first), in headless chromium
docs-screenshot: $(STAMP) system-packages
	@test -f demo/.lineage/format || { echo "no demo store: run make demo first"; exit 1; }
	$(PY) scripts/report_screenshot.py demo/.lineage docs/img/report.png

test: $(STAMP) system-packages
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(VENV)/bin/ruff check lineagestore tests benchmarks scripts tools
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) demo
