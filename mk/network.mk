# `make load`: the network server under bounded load (16 client processes x 2 threads, 60 s,
# loopback only); `make test` runs the same for 10 s.
LOAD_SECONDS ?= 60

load: install
	PTKHSM_LOAD_SECONDS=$(LOAD_SECONDS) $(PY) -m pytest -q -s -p no:cacheprovider tests/network/test_load.py

# `make bench-network`: in process vs TCP vs unix socket (docs/performance-network.md).
bench-network: install
	$(PY) tools/bench_network.py --seconds $(BENCH_SECONDS) --repeat $(BENCH_REPEAT)

# `make test-net`: the whole tests/ with the module pointed at `ptkhsm serve`, over TCP then a unix socket.
test-net: install
	PTKHSM_TEST_TRANSPORT=tcp $(PY) -m pytest -q -p no:cacheprovider tests --deselect tests/network
	PTKHSM_TEST_TRANSPORT=unix $(PY) -m pytest -q -p no:cacheprovider tests --deselect tests/network
