# make bench-store: the PostgreSQL store against sqlite (tools/bench_store.py), written to
# docs/performance-store.md; starts a throwaway PostgreSQL unless BENCH_STORE_FLAGS gives --postgresql URI.
BENCH_STORE_FLAGS ?=
.PHONY: bench-store

bench-store: install
	$(PY) tools/bench_store.py --seconds $(BENCH_SECONDS) --repeat $(BENCH_REPEAT) --out docs/performance-store.md $(BENCH_STORE_FLAGS)
