# The commands a person types. Everything installs what it needs first.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test bench fuzz build images setup clean-host

## Runs a master and an agent on loopback and one task in each containerizer.
demo:
	bash scripts/with-host.sh bash scripts/demo.sh

## Runs every test (unit, integration, end to end with real containers).
test:
	bash scripts/with-host.sh bash scripts/test.sh

## Benchmarks; prints a table and writes target/bench/results.json.
bench:
	bash scripts/with-host.sh bash scripts/bench.sh

## Fuzzes every decoder of outside input, FUZZ_SECONDS (default 60) per target.
fuzz:
	bash scripts/fuzz.sh

build:
	$(CARGO) build --workspace --bins

images:
	bash scripts/build-test-images.sh

setup:
	bash scripts/setup-host.sh
