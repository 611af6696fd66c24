# `make conformance`: the conformance runners (conformance/) drive real clients
# (pkcs11-tool, OpenSSL + libp11, GnuTLS, NSS, p11-kit, Java, C) against
# libptkhsm.so and, as a control, SoftHSMv2; the run writes
# docs/feature-matrix.md. With PTKHSM_MODULE set (development: `make inplace`)
# the installed package is not rebuilt.

CONFORMANCE_RESULTS := build/conformance/results.json

conformance: $(if $(PTKHSM_MODULE),,install)
	@mkdir -p $(dir $(CONFORMANCE_RESULTS))
	@PTKHSM_CONFORMANCE_RESULTS=$(CURDIR)/$(CONFORMANCE_RESULTS) $(PY) -m pytest -q -p no:cacheprovider conformance \
	    --deselect conformance/test_matrix.py::test_feature_matrix_is_current; status=$$?; \
	  $(PY) conformance/matrix.py $(CONFORMANCE_RESULTS) docs/feature-matrix.md || exit 1; \
	  exit $$status
