# wittra-gateway — build, test, install.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null)
# The source's commit time: a wall clock before it is known to be wrong.
BUILD_TIME ?= $(shell git log -1 --format=%cI 2>/dev/null)
LDFLAGS := -s -w -X main.Version=$(VERSION) -X main.Commit=$(COMMIT) -X main.BuildTime=$(BUILD_TIME)
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := dist/wittra-gateway

.PHONY: build run test test-short bench bench-go soak vet lint fmt cross install clean deb deb-test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/gateway

run: build
	./$(BIN) run -config config.example.yaml

# The whole suite, race detector on (it includes the kill -9 crash tests).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

# Skips the long crash/outage tests.
test-short:
	$(GO) test -race -short ./...

# The product scenarios (intake, latency, drain, memory, disk, start-up)
# against the real binary; BENCH_ARGS=-quick for a 2-minute run.
bench:
	./bench/bench.sh $(BENCH_ARGS)

# The long-running proof: the real binary under steady intake, mosquitto
# outages, subscriber churn, dedup hits, queue-full episodes and a SIGKILL;
# fails on a resource trending upward or an acknowledged message missing.
# SOAK=45s for a short run; samples.csv and soak.png go to SOAK_OUT.
SOAK     ?= 10m
SOAK_OUT ?= dist/soak
soak:
	SOAK=$(SOAK) SOAK_OUT=$(SOAK_OUT) ./bench/bench.sh soak

# Go micro-benchmarks of the hot paths.
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./buffer ./wittra ./sinks/... ./bridge

vet:
	$(GO) vet ./...

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

fmt:
	gofmt -w .

cross:
	for t in linux/amd64 linux/arm64 linux/arm/7; do \
		os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=$${rest#*/}; \
		[ "$$arch" = arm ] && ext=v$$arm || ext=; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$( [ "$$arch" = arm ] && echo $$arm ) \
			$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o dist/wittra-gateway-$$os-$$arch$$ext ./cmd/gateway || exit 1; \
	done
	ls -l dist/

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/wittra-gateway
	install -D -m 0644 systemd/wittra-gateway.service $(DESTDIR)/etc/systemd/system/wittra-gateway.service
	sed -i 's|/usr/bin/wittra-gateway|$(PREFIX)/bin/wittra-gateway|' $(DESTDIR)/etc/systemd/system/wittra-gateway.service
	install -d -m 0755 $(DESTDIR)/etc/wittra-gateway
	# The service user; only on the real root (a packager's DESTDIR has none).
	if [ -z "$(DESTDIR)" ] && ! getent passwd wittra-gateway >/dev/null; then \
		useradd --system --no-create-home --home-dir /var/lib/wittra-gateway --shell /usr/sbin/nologin wittra-gateway; fi
	# Never overwrite an operator's config.
	test -e $(DESTDIR)/etc/wittra-gateway/config.yaml || \
		sed 's|path: ./data/queue.db|path: /var/lib/wittra-gateway/queue.db|' config.example.yaml > $(DESTDIR)/etc/wittra-gateway/config.yaml
	chmod 0640 $(DESTDIR)/etc/wittra-gateway/config.yaml
	if getent group wittra-gateway >/dev/null; then chgrp wittra-gateway $(DESTDIR)/etc/wittra-gateway/config.yaml; fi
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now wittra-gateway"

# .deb packages for amd64, arm64 and armhf in dist/ (pure Go: nfpm, pinned
# in packaging/go.mod). DEB_VERSION overrides the version taken from git.
deb:
	$(GO) -C packaging run ./mkdeb -arch amd64,arm64,armhf -out dist $(if $(DEB_VERSION),-version $(DEB_VERSION))

# Installs, upgrades, removes and purges the package on this machine: root
# only, run by CI after `make test` (see packaging/deb-test.sh).
deb-test:
	./packaging/deb-test.sh

clean:
	rm -rf dist
