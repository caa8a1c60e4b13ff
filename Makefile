# Developer and CI entry points for vmkit (Rust core + Python package).
#
#   make build        build the extension into .venv (maturin develop --release)
#   make test         test-rust (with test-loom), lint-rust, test-python, lint-python, in that order
#   make system-deps  install QEMU (qemu-system-x86) for the interop tests, if missing
#   make demo         run the demo against the built package
#   make qapi         regenerate the typed QMP client from the QAPI schema (vmkit.qmp.typed.generated)
#   make bench        criterion benches, then the Python-level benchmarks (QEMU side by side)
#   make fmt          format Rust and Python sources
#   make clean        remove target/ and .venv/

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
# cargo parallelises the heavy work itself; make runs one recipe at a time.
.NOTPARALLEL:
.DEFAULT_GOAL := build

export PATH := $(HOME)/.cargo/bin:$(PATH)

VENV := .venv
PY := $(VENV)/bin/python
VENV_ABS := $(abspath $(VENV))

DEPS_STAMP := $(VENV)/.deps-stamp
BUILD_STAMP := $(VENV)/.build-stamp

# Build pyo3 against the venv's interpreter in every cargo invocation, so that
# cargo test/clippy and maturin agree on the Python configuration.
export PYO3_PYTHON := $(abspath $(PY))

# Test and bench binaries of the pyo3 crate link libpython; its directory is
# not on the loader's default path for pyenv/hostedtoolcache interpreters.
PY_LIBDIR = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")' 2>/dev/null)
WITH_LIBPYTHON = LD_LIBRARY_PATH="$(PY_LIBDIR)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}"

RUST_SRC := $(shell find crates -name '*.rs' -o -name Cargo.toml)
# Python paths that exist (git does not track empty directories).
PY_PATHS := $(wildcard python tests benches/py)

.PHONY: build demo qapi test test-rust test-loom lint-rust test-python lint-python system-deps bench fmt clean

# Venv with the build backend and the test extras, both read from pyproject.toml.
$(DEPS_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); \
	print("\n".join(d["build-system"]["requires"] + d["project"]["dependencies"] + d["project"]["optional-dependencies"]["test"]))' \
	  > $(VENV)/requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -r $(VENV)/requirements-dev.txt
	touch $@

# Editable install: Python edits under python/ need no rebuild; Rust edits do.
$(BUILD_STAMP): $(DEPS_STAMP) $(RUST_SRC) Cargo.toml $(wildcard Cargo.lock) pyproject.toml
	VIRTUAL_ENV=$(VENV_ABS) PATH="$(VENV_ABS)/bin:$$PATH" $(VENV)/bin/maturin develop --release
	touch $@

build: $(BUILD_STAMP)

demo: build
	$(PY) -m vmkit.demo --out target/demo

# The typed client is generated from the schema and committed; a test fails
# while it is stale.
qapi: build
	$(PY) -m vmkit.qmp.qapi.pygen

test: build
	@$(MAKE) --no-print-directory test-rust
	@$(MAKE) --no-print-directory lint-rust
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory lint-python

test-rust: $(DEPS_STAMP)
	$(WITH_LIBPYTHON) cargo test --workspace
	@$(MAKE) --no-print-directory test-loom

# The model check of vmkit-qom's reference count under loom (--cfg loom),
# built in a target directory of its own so the main build stays valid.
# The test bounds preemptions to 3 unless LOOM_MAX_PREEMPTIONS says otherwise.
test-loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p vmkit-qom --test loom_refcount --release

lint-rust: $(DEPS_STAMP)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# System packages the Python tests use: QEMU, for tests/test_qemu_interop.py.
# Installed with apt when missing and we are root (CI); otherwise the tests
# that need it skip (outside CI) or fail (CI).
system-deps:
	@if command -v qemu-system-x86_64 >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "system-deps: qemu-system-x86_64 not found and cannot apt-get install qemu-system-x86 (not root, or no apt); QEMU tests will skip outside CI" >&2; \
	else \
	  echo "system-deps: installing qemu-system-x86"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; }; \
	  command -v qemu-system-x86_64 >/dev/null; \
	fi

test-python: build system-deps
	$(PY) -m pytest

lint-python: build
	$(VENV)/bin/mypy --strict python/
	$(VENV)/bin/ruff check $(PY_PATHS)
	$(VENV)/bin/ruff format --check $(PY_PATHS)
	$(PY) -m mypy.stubtest vmkit._core --allowlist .mypy-stubtest-allowlist

bench: build
	$(WITH_LIBPYTHON) cargo bench -p vmkit-benches
	$(PY) benches/py/criterion_medians.py
	$(PY) benches/py/bench_qom.py
	$(PY) benches/py/bench_memory.py
	$(PY) benches/py/bench_migration.py
	$(PY) benches/py/bench_qmp.py
	$(PY) benches/py/bench_qapi.py
	$(PY) benches/py/bench_monitor_jobs.py
	cargo build --release -p vmkit-benches --bin socket_ceiling
	$(PY) benches/py/bench_live_migration.py

fmt: $(DEPS_STAMP)
	cargo fmt --all
	$(VENV)/bin/ruff format $(PY_PATHS)

clean:
	rm -rf target $(VENV)
