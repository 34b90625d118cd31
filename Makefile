# banger: one-command development sandboxes on microVMs.
# `make quickstart` sets up this machine and runs a VM; `make test` runs every tier CI runs.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X banger/internal/version.Version=$(VERSION) -X banger/internal/version.Commit=$(COMMIT)
E2E_CACHE ?= $(HOME)/.cache/banger-e2e

.PHONY: all build install fakes deps quickstart test unit root-test e2e e2e-systemd e2e-dm bench fuzz lint clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger-helper ./cmd/banger-helper
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS) -X main.version=$(VERSION)' -o $(BIN)/banger-agent ./cmd/banger-agent

# Root-owned copies of the binaries, for `banger system run` (as root): the
# helper it starts runs as root, so root runs it only from where no other
# user can replace it (run with sudo).
LIBDIR ?= /usr/local/lib/banger
install: build
	install -d -m 0755 $(LIBDIR)
	install -o root -g root -m 0755 $(BIN)/banger $(BIN)/bangerd $(BIN)/banger-helper $(BIN)/banger-agent $(LIBDIR)/

# Test doubles for firecracker and firecracker-jailer (static: the fake
# firecracker runs inside the jail). Only tests use them.
fakes:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/fakes/firecracker ./test/fakes/firecracker
	CGO_ENABLED=0 $(GO) build -o $(BIN)/fakes/jailer ./test/fakes/jailer

# Host packages (idempotent: installs only what is missing).
deps:
	scripts/deps.sh

# Set up this machine, import the default kernel, boot a VM and print from inside it.
quickstart: deps build
	scripts/quickstart.sh

# Everything CI runs: unit tests, root integration tests and real-guest e2e
# tests, one tier after the other, each with how long it took.
test: deps build
	@for tier in unit root-test e2e; do \
		start=$$(date +%s); \
		$(MAKE) --no-print-directory $$tier || { echo "make test: tier $$tier failed after $$(( $$(date +%s) - start ))s"; exit 1; }; \
		echo "make test: tier $$tier passed in $$(( $$(date +%s) - start ))s"; \
	done

# The race detector is on: the unit tier is where concurrent code (the
# daemon, the helper, the agent, the snapshot journal) runs with fakes.
unit:
	CGO_ENABLED=1 $(GO) test -count=1 -race ./...

root-test:
	BANGER_TEST_ROOT=1 $(GO) test -count=1 ./cmd/... ./internal/... ./test/fakes/...

# The Debian image and network tests need root: enabled when run as root.
E2E_DEBOOTSTRAP ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)

e2e: build
	BANGER_TEST_VM=1 BANGER_TEST_ROOT=$(E2E_DEBOOTSTRAP) BANGER_E2E_DEBOOTSTRAP=$(E2E_DEBOOTSTRAP) BANGER_E2E_NETWORK=$(E2E_DEBOOTSTRAP) BANGER_E2E_FIRECRACKER=$(E2E_DEBOOTSTRAP) BANGER_E2E_SYSTEMD=$(E2E_DEBOOTSTRAP) BANGER_E2E_CACHE=$(E2E_CACHE) BANGER_E2E_KERNEL_DEB=$$(scripts/fetch-kernel.sh $(E2E_CACHE)) \
		$(GO) test -count=1 -timeout 40m -v ./test/e2e/ ./internal/vmm/... ./internal/kernel/ ./test/fakes/...

# The systemd install test on its own: banger's two units under a real
# systemd in a systemd-nspawn container (root; the container's rootfs is
# debootstrapped once into the cache).
e2e-systemd: deps build
	BANGER_TEST_VM=1 BANGER_E2E_SYSTEMD=1 BANGER_E2E_CACHE=$(E2E_CACHE) BANGER_E2E_KERNEL_DEB=$$(scripts/fetch-kernel.sh $(E2E_CACHE)) \
		$(GO) test -count=1 -timeout 30m -v -run 'TestSystemdInstall' ./test/e2e/

# The device-mapper storage suite on its own, run as root inside a guest
# (the host kernel has no device-mapper; the guest's has).
e2e-dm: build
	BANGER_TEST_VM=1 BANGER_E2E_CACHE=$(E2E_CACHE) BANGER_E2E_KERNEL_DEB=$$(scripts/fetch-kernel.sh $(E2E_CACHE)) \
		$(GO) test -count=1 -timeout 20m -v -run 'TestGuestDM' ./test/e2e/

# Boot overhead, image pulls, and per-VM root disks with each storage backend:
# copy and reflink on this host (reflink on a temporary xfs when run as root
# on a filesystem without it), dm in a guest (TestGuestDMBench in test/e2e).
bench: deps build
	BANGER_E2E_CACHE=$(E2E_CACHE) BANGER_E2E_KERNEL_DEB=$$(scripts/fetch-kernel.sh $(E2E_CACHE)) \
		$(GO) run ./test/bench

# Every fuzz target in the repository, FUZZTIME each (not in make test, whose
# unit tier runs the targets' seeds). Packages with a `func Fuzz` in a test
# file are listed, and `go test -list` names each package's targets.
FUZZTIME ?= 30s
fuzz:
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' cmd internal test | xargs -r -n1 dirname | sort -u); do \
		for fn in $$($(GO) test -list '^Fuzz' ./$$dir | grep '^Fuzz'); do \
			echo "make fuzz: $$fn in ./$$dir for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$dir; \
		done; \
	done

lint:
	@test -z "$$(gofmt -l .)" || (gofmt -l .; echo "gofmt: files above need formatting"; exit 1)
	$(GO) vet ./...
	$(GO) tool golangci-lint run ./...

clean:
	rm -rf $(BIN)
