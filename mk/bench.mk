# make bench: ptkhsm against SoftHSMv2 through the C ABI (ptkhsm ctperf), written to
# docs/performance.md and docs/performance.svg. Takes about 10 minutes with the defaults;
# BENCH_SECONDS per test, BENCH_REPEAT runs per test (the median counts).
BENCH_SECONDS ?= 2
BENCH_REPEAT  ?= 3
BENCH_FLAGS   ?=

# the driver is compiled by setup.py's build step: a change to it means a reinstall
$(STAMP): ctperf/driver.c shim/build_ctperf.py

bench: install
	$(PY) tools/bench.py --seconds $(BENCH_SECONDS) --repeat $(BENCH_REPEAT) --out docs/performance.md $(BENCH_FLAGS)
