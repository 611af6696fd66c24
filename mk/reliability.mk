# Reliability runs longer than `make test` affords (docs/security.md):
#   make soak   SOAK_SECONDS (default 1200) of 8 threads of mixed operations; memory slope reported
SOAK_SECONDS ?= 1200

.PHONY: soak
soak: install
	PTKHSM_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_soak.py
