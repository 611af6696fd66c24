# ptkhsm — the two commands of the README: `make demo` and `make test`.
# Everything they need is installed here: Debian packages (as root, via apt),
# Python packages pinned in pyproject.toml into .venv.

PYTHON ?= python3
# One venv per interpreter: `make PYTHON=python3.13 test` builds and tests in .venv-3.13
# (the default python3 keeps .venv). tests/test_builds.py smoke-tests the other versions.
VENV   ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# What differs by Debian release (docs/hosts.md): PostgreSQL's major, the JDK (keytool and
# javac for the Java runner), pkcs11-provider (packaged from Debian 13). Another release
# gets Debian's default PostgreSQL and JDK.
DEBIAN_VERSION := $(shell . /etc/os-release 2>/dev/null; echo $$VERSION_ID)
APT_PACKAGES_12 := postgresql-15 openjdk-17-jdk-headless
APT_PACKAGES_13 := postgresql-17 openjdk-21-jdk-headless pkcs11-provider
APT_PACKAGES := opensc openssl softhsm2 libengine-pkcs11-openssl gnutls-bin libnss3-tools p11-kit p11-kit-modules gcc libc6-dev make python3-dev python3-venv openssh-client openssh-server openvpn nginx curl \
  $(or $(APT_PACKAGES_$(DEBIAN_VERSION)),postgresql default-jdk-headless)
SRC := $(shell find ptkhsm shim -name '*.py' -o -name '*.c' -o -name '*.h') pyproject.toml setup.py

.PHONY: all deps venv install demo test test-fast upstream bench conformance clean inplace
all: install

# Debian packages, only those missing (needs root on a fresh machine).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python $(SRC)
	$(PIP) install -q --disable-pip-version-check setuptools==84.2.1 cffi==2.1.1
	$(PIP) install -q --disable-pip-version-check --no-build-isolation '.[test,postgresql]'
	@touch $@

# python-pkcs11's own test suite (its sdist ships tests/), run against the module by
# tests/test_upstream_python_pkcs11.py. Only tests/ is kept: the sdist's uncompiled
# pkcs11/ package must not shadow the installed one. The pytest.ini stops pytest
# from taking our configuration. `--no-binary python-pkcs11`, not `:all:`: the
# latter builds the sdist's build requirements (Cython) from source too.
UPSTREAM := .cache/python-pkcs11-0.10.1-tests
$(UPSTREAM)/tests: | $(VENV)/bin/python
	mkdir -p .cache $(UPSTREAM)
	$(PIP) download -q --disable-pip-version-check --no-deps --no-binary python-pkcs11 python-pkcs11==0.10.1 -d .cache
	tar -xzf .cache/python_pkcs11-0.10.1.tar.gz -C $(UPSTREAM) --strip-components=1 python_pkcs11-0.10.1/tests
	printf '[pytest]\n' > $(UPSTREAM)/pytest.ini
	@touch $@

install: deps $(STAMP) $(UPSTREAM)/tests

# Development: build libptkhsm.so into the source tree (use PTKHSM_MODULE=$(CURDIR)/ptkhsm/libptkhsm.so).
inplace: $(VENV)/bin/python
	$(PY) shim/build_shim.py

demo: install
	VENV=$(VENV) tools/demo.sh

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests $(wildcard conformance)

test-fast: install
	$(PY) -m pytest -q -x -p no:cacheprovider tests

clean:
	rm -rf build *.egg-info ptkhsm/libptkhsm.so .cache

-include mk/*.mk
