# wfe-sqlite: `make serve` runs the server on ./wfe.db, `make test` runs every test.
# Everything is installed by these targets (a virtualenv in .venv, npm packages, crates, Go tools in .tools,
# Debian's chromium for the console's browser tests).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SERVED := $(VENV)/.installed-serve
PROTOS := $(wildcard protos/wfe/persistence/v1/*.proto)
GEN    := client/python
DB     ?= sqlite://wfe.db
LISTEN ?= 127.0.0.1:50051

.PHONY: install protos check-protos serve test test-python test-rust test-typescript breaking clean
.PHONY: lint lint-python lint-protos lint-rust lint-typescript
.PHONY: go-tools protos-go check-protos-go postgres-binaries serve-postgres browser screenshots

install: $(STAMP)

# setuptools prints "Editable installation ... be careful with folders in your working directory
# with the same name as your package" for every editable install of this layout (package-dir):
# information about editable installs in general, so it is filtered out, and `make serve` prints
# nothing before `listening on` but the commands it runs.
PIP_INSTALL := PYTHONWARNINGS='ignore:Editable installation:UserWarning' $(PY) -m pip install --quiet

# What `make serve` needs and no more: two distributions, both editable, the client (client/python:
# wfe_client and the generated stubs) and the server (the root: wfe_sqlite, which depends on it).
$(SERVED): pyproject.toml client/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e ./client/python -e .
	touch $@

# Everything else (make install, make test, the linters): the same with the pinned dev tools.
$(STAMP): $(SERVED)
	$(PIP_INSTALL) -e ./client/python -e '.[dev]'
	touch $@

# npm ci installs exactly package-lock.json (npm install would rewrite it).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

TS := client/typescript
$(TS)/node_modules/.installed: $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Regenerate the committed Python stubs from protos/ (pinned grpcio-tools, with .pyi), and the Go ones.
protos: $(STAMP) protos-go
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)

# Fail when the committed stubs (Python, then Go) differ from what the pinned generators make now.
check-protos: $(STAMP) check-protos-go
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	for f in $$(cd $$tmp && find . -name '*.py*' -type f); do \
		cmp -s $$tmp/$$f $(GEN)/$$f || { echo "stale generated stub: $(GEN)/$$f (run 'make protos')"; rm -rf $$tmp; exit 1; }; \
	done; \
	extra=$$(cd $(GEN) && find wfe -name '*_pb2*.py*' -type f | while read f; do [ -f $$tmp/$$f ] || echo $$f; done); \
	rm -rf $$tmp; \
	if [ -n "$$extra" ]; then echo "generated stubs without a proto: $$extra"; exit 1; fi; \
	echo "generated stubs are up to date"

# Go tools, each pinned and built from the Go module proxy (`go install pkg@version`) into .tools/bin,
# which is never on anyone's PATH by itself: the stub generators for the Go example, plus grpcurl and
# grpc-health-probe for the README's examples. A tool is rebuilt only when its binary is missing or was
# built from another version. Also downloads the modules of examples/go, so its test needs no network.
# No proxy, no tools: the target fails and says so (nothing is skipped).
GO         ?= go
TOOLS      ?= $(CURDIR)/.tools
TOOLS_BIN  := $(TOOLS)/bin
GO_TOOLS   := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 \
              google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2 \
              github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 \
              github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
GO_EXAMPLE := examples/go
GO_GEN     := $(GO_EXAMPLE)/gen
# The machine's Go builds the tools (GOTOOLCHAIN=local): a module asking for a newer Go fails loudly
# instead of fetching a toolchain.
GO_ENV     := GOTOOLCHAIN=local

go-tools:
	@command -v $(GO) >/dev/null || { echo "make go-tools: '$(GO)' is not on the PATH; Go 1.26 or later is needed (examples/go needs it)"; exit 1; }
	@for tool in $(GO_TOOLS); do \
		pkg=$${tool%@*}; version=$${tool#*@}; bin=$(TOOLS_BIN)/$${pkg##*/}; \
		if [ -x $$bin ] && [ "$$($(GO) version -m $$bin 2>/dev/null | awk '$$1 == "mod" { print $$3 }')" = "$$version" ]; then continue; fi; \
		echo "go install $$tool"; \
		GOBIN=$(TOOLS_BIN) $(GO_ENV) $(GO) install $$tool || { \
			echo "make go-tools: could not build $$tool from the Go module proxy (GOPROXY=$$($(GO) env GOPROXY)); see the error above"; exit 1; }; \
	done
	@cd $(GO_EXAMPLE) && $(GO_ENV) $(GO) mod download || { \
		echo "make go-tools: could not download the modules of $(GO_EXAMPLE) from the Go module proxy (GOPROXY=$$($(GO) env GOPROXY)); see the error above"; exit 1; }

# The committed Go stubs of examples/go: the pinned grpcio-tools protoc with the pinned Go plugins.
# paths=source_relative puts them under $(GO_GEN)/wfe/persistence/v1 whatever go_package says.
GO_PROTOC = $(PY) -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-go=$(TOOLS_BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS_BIN)/protoc-gen-go-grpc \
	--go_out=$(1) --go_opt=paths=source_relative --go-grpc_out=$(1) --go-grpc_opt=paths=source_relative $(PROTOS)

protos-go: $(STAMP) go-tools
	rm -rf $(GO_GEN) && mkdir -p $(GO_GEN)
	$(call GO_PROTOC,$(GO_GEN))

check-protos-go: $(STAMP) go-tools
	@tmp=$$(mktemp -d) && $(call GO_PROTOC,$$tmp) && \
	if diff -r $$tmp $(GO_GEN) >/dev/null; then rm -rf $$tmp; echo "generated Go stubs are up to date"; \
	else diff -rq $$tmp $(GO_GEN); rm -rf $$tmp; echo "stale generated Go stubs in $(GO_GEN) (run 'make protos')"; exit 1; fi

lint-protos: node_modules/.installed
	npx --no-install buf lint

# Every linter, each pinned (dev extras, package.json, rust-toolchain.toml): zero findings or it fails.
lint: lint-python lint-protos lint-rust lint-typescript

# ruff (lint and format) over the hand-written Python (server, client, tests, bench; the generated
# stubs excluded), mypy --strict over the packages (pyproject.toml [tool.ruff], [tool.mypy]).
lint-python: $(STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .
	$(VENV)/bin/mypy

# rustfmt and clippy (the toolchain and both components pinned in rust-toolchain.toml) on the
# adapter crate and the bench, every target, warnings as errors.
RUST_CRATES := client/rust bench/rust
lint-rust:
	@for crate in $(RUST_CRATES); do \
		echo "cargo fmt --check, cargo clippy: $$crate"; \
		(cd $$crate && cargo fmt --check && cargo clippy --locked --all-targets -- -D warnings) || exit 1; \
	done

# tsc (strict) and eslint (typescript-eslint's recommended type-checked rules) on the
# TypeScript adapter, its tests and scripts; the stubs are generated first.
lint-typescript: $(TS)/node_modules/.installed
	cd $(TS) && npm run --silent lint

# Compare the contract with the previous commit: a breaking change fails.
breaking: node_modules/.installed
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:protos 2>/dev/null; then \
		npx --no-install buf breaking --against '.git#ref=HEAD~1'; \
	else echo "no previous contract to compare with"; fi

serve: $(SERVED)
	$(VENV)/bin/wfe-sqlite serve --db $(DB) --listen $(LISTEN) $(if $(CONSOLE),--console-listen $(CONSOLE))

# PostgreSQL server binaries for the tests (tests/pgcluster.py runs initdb/pg_ctl from them): Debian's
# package when none is installed. Cannot install: fail here with a message (the tests never skip).
postgres-binaries:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -x "$$WFE_PG_BIN/initdb" ] || { 		echo "PostgreSQL binaries missing: apt-get install postgresql"; 		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } 		&& ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { 		echo "make postgres-binaries: PostgreSQL is not installed and could not be installed (apt-get install postgresql); the PostgreSQL tests need it"; exit 1; }; }

# Try the PostgreSQL backend: a throwaway local PostgreSQL and two servers on it, on 127.0.0.1:50051
# and 127.0.0.1:50052, until Ctrl-C (which stops all three and deletes the cluster). Serving needs
# no dev tools (tests/pgcluster.py is the standard library only). The trap is set before anything
# starts, so Ctrl-C during start-up stops what has started. A server that cannot start (exit 2: its
# port taken, say) stops the other one and PostgreSQL, and make fails naming it; one killed or
# stopped later leaves the other serving (try a failover). (pgcluster.py, a background job of a
# non-interactive sh, ignores SIGINT: the trap stops it with SIGTERM, after the servers.)
PG_LISTEN_1 ?= 127.0.0.1:50051
PG_LISTEN_2 ?= 127.0.0.1:50052
serve-postgres: $(SERVED) postgres-binaries
	@dir=$$(mktemp -d); pg=; servers=; \
	stop() { \
		trap - INT TERM HUP EXIT; \
		if [ -n "$$servers" ]; then kill $$servers 2>/dev/null; wait $$servers; fi; \
		if [ -n "$$pg" ]; then kill $$pg 2>/dev/null; wait $$pg; fi; \
		rm -rf $$dir; \
	}; \
	trap 'stop; exit 130' INT; trap 'stop; exit 143' TERM; trap 'stop; exit 129' HUP; \
	trap 'code=$$?; stop; exit $$code' EXIT; \
	$(PY) tests/pgcluster.py --url-file $$dir/url & pg=$$!; \
	while [ ! -s $$dir/url ]; do kill -0 $$pg 2>/dev/null || exit 1; sleep 0.2; done; \
	url=$$(cat $$dir/url); \
	$(VENV)/bin/wfe-sqlite migrate --db $$url || exit 1; \
	$(VENV)/bin/wfe-sqlite serve --db $$url --listen $(PG_LISTEN_1) & s1=$$!; servers=$$s1; \
	$(VENV)/bin/wfe-sqlite serve --db $$url --listen $(PG_LISTEN_2) & s2=$$!; servers="$$s1 $$s2"; \
	echo "two servers on $$url: $(PG_LISTEN_1) and $(PG_LISTEN_2) (Ctrl-C stops them and PostgreSQL)"; \
	gone() { \
		kill -0 $$1 2>/dev/null && return 1; wait $$1; \
		[ $$? != 2 ] || { echo "make serve-postgres: the server on $$2 could not start (exit 2): stopping the other one and PostgreSQL" >&2; exit 1; }; \
	}; \
	while [ -n "$$s1$$s2" ]; do \
		sleep 0.5; \
		if [ -n "$$s1" ] && gone $$s1 $(PG_LISTEN_1); then s1=; fi; \
		if [ -n "$$s2" ] && gone $$s2 $(PG_LISTEN_2); then s2=; fi; \
	done; \
	echo "make serve-postgres: both servers have exited: stopping PostgreSQL" >&2; \
	exit 1

# Debian's Chromium and its driver for the console's browser tests (tests/test_console_browser.py),
# from the system package manager when missing; no test tool downloads a browser of its own.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y chromium chromium-driver; \
	fi

# The console's screenshots in docs/ (shown in the README), taken by its browser tests.
screenshots: $(STAMP) browser
	WFE_CONSOLE_SCREENSHOTS=docs $(PY) -m pytest -q tests/test_console_browser.py -k 'screenshots or tokens'

test-python: $(STAMP) go-tools postgres-binaries browser
	$(PY) -m pytest -q

# The Rust adapter: builds the crate (crates from crates.io), runs wfe-core's persistence_suite and
# the adapter tests against live servers. The WFE engine example runs in test-python
# (tests/test_rust_engine.py), on the binary built here.
test-rust: $(STAMP)
	WFE_RUST_SKIP_PYTEST=1 client/rust/run-tests.sh

# The TypeScript adapter: npm ci, generate stubs from protos/, compile, node's test runner.
test-typescript: $(STAMP)
	client/typescript/run-tests.sh

test: check-protos lint breaking test-rust test-typescript test-python

clean:
	rm -rf $(VENV) node_modules $(TS)/node_modules build *.egg-info .tools

# Performance against the machine's limits (bench/run.py); writes BENCHMARKS.md.
# SCALE=10k,100k (default; SCALE=10k,100k,1m adds the 1M-workflow figures, SCALE= none), RUST=0 skips cargo,
# CLUSTER=0 skips the WFE hosts throughput (bench/cluster_hosts.py, a few minutes).
# Visibility figures (list, search, purge during creates; bench/visibility.py) on the largest SCALE,
# or VISIBILITY=1m (VISIBILITY= none).
.PHONY: bench bench-postgres
bench: install
	$(PY) bench/run.py
	$(PY) bench/cluster.py
	$(MAKE) bench-postgres

# The server on PostgreSQL (1, 2 and 4 processes) vs SQLite and the upstream wfe-postgres crate
# in-process (bench/postgres.py, a throwaway durable PostgreSQL); writes its section of BENCHMARKS.md.
# Needs cargo (the crate is the peer, the Rust adapter the load). ADAPTER=python for Python-adapter load.
bench-postgres: install postgres-binaries
	$(PY) bench/postgres.py --adapter $${ADAPTER:-rust}

# Reliability (RELIABILITY.md): 25 crash rounds with totals, larger multi-process and hypothesis runs.
.PHONY: stress
stress: install
	WFE_STRESS_ROUNDS=$${WFE_STRESS_ROUNDS:-25} WFE_MP_SCALE=$${WFE_MP_SCALE:-3} \
	WFE_HYPOTHESIS_EXAMPLES=$${WFE_HYPOTHESIS_EXAMPLES:-300} \
	$(PY) -m pytest -q -s -p no:cacheprovider tests/reliability -k 'not steady_mixed_load'

# Ten minutes of steady mixed load against a real server: throughput, errors, server RSS start/end.
.PHONY: soak
soak: install
	$(PY) tests/reliability/soak.py --seconds $${WFE_SOAK_SECONDS:-600}
