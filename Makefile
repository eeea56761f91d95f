# The two commands of the README: `make demo` and `make test`.
# Each installs what is missing (apt packages, the virtualenv, the guest image).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qemu-system-x86 busybox-static squashfs-tools crun runc kmod cpio \
	python3.11-minimal python3-venv podman containerd containernetworking-plugins util-linux \
	e2fsprogs nftables
APT_STAMP := $(VENV)/.apt-$(shell echo $(APT_PACKAGES) | md5sum | cut -c1-8)
VENV_STAMP := $(VENV)/.installed
IMAGE_STAMP := $(VENV)/.image
PROTO_STAMP := src/virtcontainers/shim/_gen/.stamp
# containerd finds the shim of runtime io.containerd.vc.v2 by this name on its PATH.
SHIM_LINK := /usr/local/bin/containerd-shim-vc-v2
PYTEST_WORKERS ?= 2

.PHONY: demo template test lint unit bench bench-density deps image clean shim-link conformance

deps: $(APT_STAMP) $(VENV_STAMP) $(PROTO_STAMP) shim-link

$(APT_STAMP):
	@scripts/install-apt.sh $(APT_PACKAGES)
	@mkdir -p $(VENV) && touch $@

$(VENV_STAMP): pyproject.toml | $(APT_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# The shim's containerd messages, generated from containerd's own .proto files
# (fetched from Debian's packages, cached by version); never committed.
$(PROTO_STAMP): scripts/gen-shim-protos.sh | $(VENV_STAMP)
	scripts/gen-shim-protos.sh $(BIN)/python src
	touch $@

# Always made again: it points at this checkout's virtualenv.
shim-link: | $(VENV_STAMP)
	ln -sfn $(abspath $(BIN))/containerd-shim-vc-v2 $(SHIM_LINK)

# The image is cached by a hash of its inputs: this is a no-op when nothing changed.
# Stale apt lists can name a kernel the mirror no longer has: refresh them once and retry.
image: deps
	$(BIN)/virtc image build || { apt-get update -qq && $(BIN)/virtc image build; }

# The default pod's VM template (a no-op when it exists): the demo's pod is its clone.
template: image
	$(BIN)/virtc factory init

demo: template
	$(BIN)/python examples/demo.py

lint: deps
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

unit: deps
	$(BIN)/pytest -q -m 'not vm and not engine' -n $(PYTEST_WORKERS) --basetemp=/tmp/vc-pytest

# A short fixed --basetemp (pytest clears it each run): tests make unix sockets
# under their temp dirs, and a socket path must fit in 107 bytes.
test: image lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --basetemp=/tmp/vc-pytest

# All of it, density included (≈20 min here); bench-density is the density sweep alone.
bench: image
	$(BIN)/python bench/run.py

bench-density: image
	$(BIN)/python bench/run.py --only density

# critest, the CRI's conformance suite, against one private containerd with the
# runc and vc handlers in the same run (docs/conformance.md). CRITEST is a built
# critest or a cri-tools checkout (tag v1.26.1, built there offline); nothing
# of cri-tools is fetched or kept here. Logs and JUnit reports go to CONFORMANCE_RESULTS.
CONFORMANCE_RESULTS ?= /tmp/vc-conformance-results
conformance: image
	@test -n "$(CRITEST)" || { echo "make conformance CRITEST=PATH: a critest binary or a cri-tools v1.26.1 checkout (see docs/conformance.md)" >&2; exit 2; }
	@test -e "$(CRITEST)" || { echo "CRITEST=$(CRITEST) does not exist" >&2; exit 2; }
	@scripts/install-apt.sh golang-go skopeo docker-registry
	$(BIN)/python -m scripts.conformance --critest "$(abspath $(CRITEST))" --results "$(CONFORMANCE_RESULTS)"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache src/virtcontainers/shim/_gen
