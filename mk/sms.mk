# `make bench-sms`: the cost of Secure Messaging, SMS off / signing / full, in process and
# over TCP (docs/performance-sms.md; issue 17's goals).
bench-sms: install
	$(PY) tools/bench_sms.py --seconds $(BENCH_SECONDS) --repeat $(BENCH_REPEAT)

.PHONY: bench-sms
