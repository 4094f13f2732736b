# stemvault: `make run` runs the whole pipeline locally; `make test` proves everything.
# Both install what they need first (Python venvs under .venv/; for `make test` the arm64
# Rust target too, when missing).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Build output lives outside the clone, a directory per clone: cargo takes a build as fresh by
# file times, so a clone whose sources are older than another clone's build would run that
# build. (.ci/run's copies, whose files are all new, share one.)
ifeq ($(strip $(CARGO_TARGET_DIR)),)
CARGO_TARGET_DIR := $(HOME)/.cache/stemvault/target-$(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)
endif
export CARGO_TARGET_DIR
# The tools' own caches (zig's for the arm64 build; on Linux cargo-zigbuild's, pip's and
# checkov's too) beside the builds rather than in ~/.cache, unless you keep them elsewhere.
export XDG_CACHE_HOME ?= $(HOME)/.cache/stemvault/xdg
export CARGO_TERM_COLOR ?= never
PYTHON ?= python3
VENV := .venv
EMULATOR := infra/local/emulator.sh
TOOLS := $(VENV)/tools/bin
CHECKOV := $(VENV)/checkov/bin
# The template checks read nothing of the machine's: settings in ~ (a ~/.cfnlintrc or
# ~/.checkov.yaml skipping checks, an AWS profile sam would look up) or checkov's environment
# (CKV_SKIP_CHECK, BC_API_KEY) would make `make test` pass or fail elsewhere than in CI.
TOOL_HOME := $(XDG_CACHE_HOME)/stemvault-tool-home
HERMETIC := env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u CKV_CHECK -u CKV_SKIP_CHECK -u CKV_FRAMEWORK \
  -u CKV_SKIP_FRAMEWORK -u BC_API_KEY HOME="$(TOOL_HOME)" AWS_CONFIG_FILE=/dev/null \
  AWS_SHARED_CREDENTIALS_FILE=/dev/null

.PHONY: FORCE help build-dir deps rust-components tools lambda-target python-locks test fmt-check clippy docs unit-and-integration template-lint checkov lambda-build run demo bench bench-micro clean clean-build

help:
	@echo "make run    - the whole pipeline locally (emulator, callback endpoint, downloader)"
	@echo "make test   - formatting, lints, API docs, every test, template checks, arm64 Lambda builds"
	@echo "make demo   - post the seed split_stem callback to a running 'make run' and show the vault, then a task recovered by the reconciler"
	@echo "make bench  - the release bootstraps side by side with their peers (DynamoDB cost, CPU, RSS)"
	@echo "make bench-micro - the in-process Rust benchmarks (tests/benches) against the emulator"
	@echo "make clean  - the virtualenvs and .local; make clean-build - the build directory ($(CARGO_TARGET_DIR))"
	@echo "make build-dir - print this clone's build directory"
	@echo "make tools  - SAM CLI, cargo-lambda, Zig and the arm64 target into .venv/tools, for sam build (README, Deploying)"

build-dir:
	@echo "$(CARGO_TARGET_DIR)"

# --- installs -------------------------------------------------------------------------
# One virtualenv per requirements file, infra/python/<name>.txt: the emulator (moto), the
# tools (aws-sam-cli, cfn-lint, cargo-lambda), checkov apart (its boto3 pin conflicts with
# aws-sam-cli's, see checkov.txt), and the Standard Webhooks verifier of the notify tests.
# Each installs its <name>.lock: every package at the version tested, its files' hashes checked.
VENVS := emulator tools checkov webhooks
# infra/python/install.sh makes one at a time (two makes started together share the work). It
# runs every time (FORCE): a venv is made again when its Python no longer runs or is not
# PYTHON's version (a Python upgraded under it, another PYTHON), which no timestamp shows.
$(VENVS:%=$(VENV)/%/.installed): $(VENV)/%/.installed: infra/python/%.txt infra/python/%.lock FORCE
	@infra/python/install.sh "$(PYTHON)" $*

FORCE:

# After changing a requirements file: resolve every venv afresh and rewrite the locks, once
# per Python (make python-locks PYTHON=python3.12 ...; each keeps the others' pins).
python-locks:
	infra/python/lock.sh $(PYTHON) $(VENVS)

# What the tests need; `make run` and `make demo` the emulator's alone (no rustup call: the two
# are typed at once, and rustup does not take two at once).
deps: $(VENV)/emulator/.installed $(VENV)/webhooks/.installed rust-components

# rustfmt and clippy, which a minimal rustup profile lacks (best effort: a Rust installed
# without rustup may have them already; rustup retries a failed download itself). Before
# every other rustup call: rustup does not take two at once (make -j).
rust-components:
	@out=$$(rustup component add rustfmt clippy 2>&1) \
	  || echo "note: rustup did not add rustfmt and clippy (a Rust without rustup may have them): $$out" >&2

# What `sam build` needs (README, Deploying): SAM CLI, cargo-lambda, Zig and the arm64 target.
tools: $(VENV)/tools/.installed rust-components lambda-target

# The Lambdas' target, added only when its standard library is not in the toolchain (a Rust
# from rustup or a distribution's package; rustup downloads it: a machine offline that has
# it already needs no network), by the one build that needs it, so every test runs first.
LAMBDA_TARGET := aarch64-unknown-linux-gnu
lambda-target: rust-components
	@test -d "$$(rustc --print sysroot)/lib/rustlib/$(LAMBDA_TARGET)/lib" \
	  || rustup target add $(LAMBDA_TARGET) >/dev/null \
	  || { echo "cannot add the Rust target $(LAMBDA_TARGET) (rustup needs the network once, or: rustup target add $(LAMBDA_TARGET))" >&2; exit 1; }

# --- test -----------------------------------------------------------------------------
test: deps fmt-check clippy docs unit-and-integration template-lint checkov lambda-build

# The bench scripts are not run by `make test` (it asserts no timings): only checked to parse.
# rustfmt's own `--color auto` colours its diff even into a file (CARGO_TERM_COLOR is cargo's).
fmt-check: rust-components
	cargo fmt --all --check -- --color "$$(test -t 1 && echo auto || echo never)"
	$(PYTHON) -c 'import ast, sys; [ast.parse(open(p).read(), p) for p in sys.argv[1:]]' bench/*.py bench/py-download/*.py

# Lints and doc links fail the build on the Rust release they were last clean on; on another
# (a fresh machine gets the newest stable, whose new lints this code has not met) they are
# printed as warnings, so `make test` still tests. rust-toolchain.toml is not used to pin it:
# rustup would then download that release, which an offline machine cannot.
RUST_LINTED := 1.95
# A stable release's major.minor (a nightly or beta of 1.95 is not 1.95: its lints differ).
RUST_RELEASE := $(shell rustc --version 2>/dev/null | sed -nE 's/^rustc ([0-9]+\.[0-9]+)\.[0-9]+ .*/\1/p')
LINTS := $(if $(filter $(RUST_LINTED),$(RUST_RELEASE)),-D warnings,-W warnings)

clippy: rust-components
	@test "$(RUST_RELEASE)" = "$(RUST_LINTED)" || echo "note: not stable Rust $(RUST_LINTED) ($$(rustc --version)): lint warnings do not fail the build" >&2
	cargo clippy --workspace --all-targets --locked -- $(LINTS)

# The API docs build without a broken or private link (they are how the crates are read).
docs:
	RUSTDOCFLAGS="$(LINTS)" cargo doc --workspace --no-deps --locked

unit-and-integration: deps
	$(EMULATOR) cargo test --workspace --locked

template-lint: $(VENV)/tools/.installed
	mkdir -p "$(TOOL_HOME)"
	$(HERMETIC) $(TOOLS)/cfn-lint template.yaml
	$(HERMETIC) SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(TOOLS)/sam validate --lint --template-file template.yaml

# checkov on the template, offline: fails on a failed check, a parse error, or a check skipped
# without a reason (template.yaml: `Metadata: checkov: skip: - id: CKV_... comment: ...`).
# The gate's own checks first, and those of markers.py and hash_lock.py (python-locks'; any
# venv's Python).
checkov: $(VENV)/checkov/.installed
	PYTHONDONTWRITEBYTECODE=1 $(CHECKOV)/python infra/python/test_checkov_gate.py
	PYTHONDONTWRITEBYTECODE=1 $(CHECKOV)/python infra/python/test_markers.py
	PYTHONDONTWRITEBYTECODE=1 $(CHECKOV)/python infra/python/test_hash_lock.py
	mkdir -p .local "$(TOOL_HOME)"
	$(HERMETIC) $(CHECKOV)/checkov --file template.yaml --framework cloudformation secrets --skip-download \
	  --output json >.local/checkov.json || true
	$(CHECKOV)/python infra/python/checkov_gate.py .local/checkov.json

# The bootstraps as `sam build` makes them: at the root, without -p (the workspace's
# default-members, the Lambdas alone), so their dependencies are what is deployed; and no
# second TLS stack (ring) among them (grep reads a here-string: after a pipe, its early exit
# on a match could kill printf with SIGPIPE, which pipefail and the ! read as no ring).
# A bootstrap over 8 MB (issue 9's bound, decimal) fails the build: they deploy as zips and
# start cold, and what grows them (a second TLS stack, a default feature) is easy to miss.
MAX_BOOTSTRAP_BYTES := 8000000
# One Lambda per functions/<name>/, its binary named so (so a bootstrap not built fails too).
LAMBDAS := $(notdir $(patsubst %/,%,$(wildcard functions/*/)))
lambda-build: tools
	PATH="$(abspath $(TOOLS)):$$PATH" cargo lambda build --release --arm64 --locked
	@deps="$$(cargo tree --locked -e normal --target aarch64-unknown-linux-gnu --prefix none)" \
	  && ! grep -q '^ring ' <<<"$$deps" \
	  || { echo "the Lambdas' dependencies cannot be listed, or ring is among them: one TLS stack (aws-lc-rs), see Cargo.toml" >&2; exit 1; }
	@cd "$(CARGO_TARGET_DIR)/lambda" && over=0 && for f in $(LAMBDAS:%=%/bootstrap); do \
	  test -f "$$f" || { echo "$$f was not built" >&2; over=1; continue; }; \
	  bytes="$$(( $$(wc -c < "$$f") ))"; printf '%s bootstrap: %s bytes (issue 9: at most 8 MB)\n' "$${f%/bootstrap}" "$$bytes"; \
	  test "$$bytes" -le $(MAX_BOOTSTRAP_BYTES) || { echo "$$f is over $(MAX_BOOTSTRAP_BYTES) bytes" >&2; over=1; }; done; \
	  exit $$over

# --- run ------------------------------------------------------------------------------
# The note tells a `make demo` started meanwhile to wait for this runner (the runner removes it;
# it names this make, so a run that stops first leaves a note no demo waits for). The runner is
# exec'd: make passes a SIGTERM on to the recipe's process, which a shell waiting on a command
# would not pass on.
run: $(VENV)/emulator/.installed
	@mkdir -p .local && echo $$PPID > .local/run.starting
	@cargo build --locked -p stemvault-local || { rm -f .local/run.starting; exit 1; }
	@exec $(EMULATOR) "$(CARGO_TARGET_DIR)/debug/stemvault-local"

# Against a running `make run` when one answers on PORT (PORT unset: the live runner's port,
# from .local/run.json), else the whole pipeline in-process under a fresh emulator.
demo: $(VENV)/emulator/.installed
	cargo build --locked -p stemvault-local
	@if "$(CARGO_TARGET_DIR)/debug/stemvault-local" status >/dev/null 2>&1; then \
	  exec "$(CARGO_TARGET_DIR)/debug/stemvault-local" demo; \
	else \
	  exec $(EMULATOR) "$(CARGO_TARGET_DIR)/debug/stemvault-local" demo; \
	fi

# --- bench ----------------------------------------------------------------------------
# Benchmarks, not tests: numbers for this machine, in one run, each next to its target (issue 9);
# bench/README.md says what each harness measures. The release bootstraps are copied aside so
# a rebuild during the run cannot swap them. Raw results: $(BENCH_OUT)/last.json.
BENCH_OUT ?= $(CARGO_TARGET_DIR)/bench
# Off Linux it stops before installing or building anything (deps after the check, so not
# beside it under make -j).
bench:
	@[ -r /proc/self/stat ] || { echo "make bench measures CPU and memory through /proc: it runs on Linux only" >&2; exit 2; }
	@$(MAKE) --no-print-directory deps
	cargo build --release --locked -p stemvault-ingest -p stemvault-download
	mkdir -p "$(BENCH_OUT)/bin"
	cp "$(CARGO_TARGET_DIR)/release/ingest" "$(CARGO_TARGET_DIR)/release/download" "$(BENCH_OUT)/bin/"
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/emulator/bin/python bench/run.py \
	  --ingest "$(BENCH_OUT)/bin/ingest" --download "$(BENCH_OUT)/bin/download" \
	  --scratch "$(BENCH_OUT)" --out "$(BENCH_OUT)/last.json"

# The in-process Rust benchmarks (tests/benches) against the emulator.
bench-micro: deps
	$(EMULATOR) cargo bench --locked -p stemvault-tests

clean:
	rm -rf $(VENV) .local

# This clone's build output (CARGO_TARGET_DIR, outside the clone; make build-dir prints it).
clean-build:
	cargo clean
