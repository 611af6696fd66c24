# Reliability runs longer than `make test` affords (docs/security.md). They leave out the
# session's DEBUG log and its secrets check (tests/suitelog.py; make test has them): gigabytes
# of log would measure the logging, not the module.
LONG_RUN = PTKHSM_SESSION_LOG=0
#   make soak   SOAK_SECONDS (default 1200) of 8 threads of mixed operations; memory slope reported
SOAK_SECONDS ?= 1200

.PHONY: soak
soak: install
	$(LONG_RUN) PTKHSM_SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_soak.py

#   make fuzz   FUZZ_CALLS (default 1,000,000) random ABI calls from 4 threads on the HSM's token
#               (slot 1), plus every seed of tests/fuzz/seeds.txt, 250,000 calls on ExtToken's
#               slot 0 and 100,000 through `ptkhsm serve` on a unix socket (FUZZ_SEED picks the
#               new runs' seed)
FUZZ_CALLS ?= 1000000
.PHONY: fuzz
fuzz: install
	$(LONG_RUN) PTKHSM_FUZZ_CALLS=$(FUZZ_CALLS) PTKHSM_FUZZ_ALL_SEEDS=1 $(if $(FUZZ_SEED),PTKHSM_FUZZ_SEED=$(FUZZ_SEED)) \
	  $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py

#   make crash      CRASH_ROUNDS (default 2000) kill -9 points
#   make multiproc  MULTIPROC_SECONDS (default 300) of 4 writers and a reader
CRASH_ROUNDS ?= 2000
MULTIPROC_SECONDS ?= 300
.PHONY: crash multiproc
crash: install
	$(LONG_RUN) PTKHSM_CRASH_ROUNDS=$(CRASH_ROUNDS) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_crash_safety.py
multiproc: install
	$(LONG_RUN) PTKHSM_MULTIPROC_SECONDS=$(MULTIPROC_SECONDS) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_multiprocess.py

#   make valgrind   the module under memcheck, driven by the fuzzer (docs/security.md)
APT_PACKAGES += valgrind
.PHONY: valgrind
valgrind: install
	$(LONG_RUN) PTKHSM_VALGRIND=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/test_valgrind.py
