# make bench: every benchmark, each written to its own page of docs/ (takes about 20 minutes):
#   bench-core      ptkhsm against SoftHSMv2 through the C ABI (ptkhsm ctperf): docs/performance.md, .svg
#   bench-network   in process vs TCP vs the unix socket: docs/performance-network.md
#   bench-store     the PostgreSQL store against sqlite: docs/performance-store.md
#   bench-sms       Secure Messaging off / signing / full: docs/performance-sms.md
#   bench-exttoken  slot 0's external token at EXTTOKEN_OBJECTS objects: docs/performance-exttoken.md
# BENCH_SECONDS per test, BENCH_REPEAT runs per test (the median counts).
BENCH_SECONDS ?= 2
BENCH_REPEAT  ?= 3
BENCH_FLAGS   ?=
EXTTOKEN_OBJECTS ?= 100000

.PHONY: bench bench-core bench-exttoken

# the driver is compiled by setup.py's build step: a change to it means a reinstall
$(STAMP): ctperf/driver.c shim/build_ctperf.py

bench: bench-core bench-network bench-store bench-sms bench-exttoken

bench-core: install
	$(PY) tools/bench.py --seconds $(BENCH_SECONDS) --repeat $(BENCH_REPEAT) --out docs/performance.md $(BENCH_FLAGS)

bench-exttoken: install
	$(PY) tools/bench_exttoken.py --objects $(EXTTOKEN_OBJECTS) --seconds $(BENCH_SECONDS) --out docs/performance-exttoken.md
