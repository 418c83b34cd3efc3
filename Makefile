# certgate — `make run` tries it, `make test` checks it. See README.md.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO   ?= demo
PORT   ?= 8443
UPSTREAM_PORT ?= 9090
# sslyze (TLS posture check in `make test`) pins its own OpenSSL binding (nassl): own virtualenv
SSLYZE_VENV ?= .venv-sslyze

.PHONY: all venv install system-deps sslyze-venv run demo typecheck test test-unit test-blackbox bench bench-quick bench-ocsp check clean plugin-cache

all: install

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --upgrade pip
	$(PIP) install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

venv install: $(VENV)/.installed

$(SSLYZE_VENV)/.installed:
	test -x $(SSLYZE_VENV)/bin/python || $(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install -q --disable-pip-version-check 'sslyze >= 6.3, < 7'
	touch $@

sslyze-venv: $(SSLYZE_VENV)/.installed

# Demo: a fresh PKI, a demo upstream that shows the headers it receives, certgate in front.
run: install
	@$(VENV)/bin/certgate demo-pki $(DEMO) --password demo-password >/dev/null
	@sed -e 's/@PORT@/$(PORT)/; s/@UPSTREAM_PORT@/$(UPSTREAM_PORT)/' conf/demo.conf.in > $(DEMO)/certgate.conf
	@$(VENV)/bin/certgate check-config $(DEMO)/certgate.conf
	@bash conf/demo-run.sh $(VENV) $(DEMO) $(PORT) $(UPSTREAM_PORT)

# System programs the tests run for real (cockpit-ws, redis, chromium, ...): apt-get as root.
system-deps:
	bash tests/system/install.sh

# mypy over proxy/, trust/ and tests/harness/ (setup.cfg [mypy]); `make test` runs it before the tests
typecheck: install
	$(VENV)/bin/mypy

test: install system-deps sslyze-venv typecheck
	$(PY) -m pytest -q tests

test-unit: install
	$(PY) -m pytest -q tests/unit

test-blackbox: install
	$(PY) -m pytest -q tests/blackbox

bench: install
	bash bench/run.sh --full; rc=$$?; $(PY) bench/ocsp_bench.py || rc=$$((rc ? rc : $$?)); exit $$rc

bench-quick: install
	bash bench/run.sh --quick; rc=$$?; $(PY) bench/ocsp_bench.py --cached 5000 --cold 50 --reps 1 || rc=$$((rc ? rc : $$?)); exit $$rc

bench-ocsp: install
	$(PY) bench/ocsp_bench.py

plugin-cache:
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

clean:
	rm -rf $(VENV) $(SSLYZE_VENV) $(DEMO) build *.egg-info twisted/plugins/dropin.cache
