# exfilwatch: `make run` replays the shipped sample logs; `make test` runs every test.
# One cargo profile (release) serves run, test and bench, so dependencies compile once.

CARGO ?= cargo
SAMPLE_LOGS := sample-logs

.PHONY: deps run demo test investigate build bench bench-investigate bench-kafka bench-scale bench-criterion bench-pipeline eval sample-logs train-sample fmt lint clean

## OpenSSL's headers for librdkafka's TLS (Debian's libssl-dev), installed when missing.
deps:
	bash scripts/build-deps.sh

build: deps
	$(CARGO) build --release --locked

## The main job on the embedded default: replay the sample logs, print alerts and the summary.
## The build shows its progress (the first one takes minutes on a fresh machine).
run: deps
	$(CARGO) build --release --locked --bin exfilwatch
	$(BIN_DIR)/exfilwatch replay $(SAMPLE_LOGS)

## The streaming service end to end on a real broker (Tansu: installed when missing, started
## and stopped): topics, the sample logs produced, `exfilwatch run` until caught up, the alerts.
demo: deps
	$(CARGO) build --release --locked --bin exfilwatch --example kafka_tool
	bash scripts/with-tansu.sh bash scripts/demo.sh

## Every test: unit, property, integration (golden alerts of the sample logs), the streaming
## service against a real broker (Tansu, installed and started when needed) and against real
## Prometheus and Alertmanager (Debian packages, installed when missing).
## Then the investigation crate (polars; its own build, after the service's): its tables against
## independent sums, its CSV/Parquet readers, and its HTML report in headless Chromium
## (Debian's package, installed when missing).
test: deps
	bash scripts/with-monitoring.sh bash scripts/with-tansu.sh bash scripts/with-s3.sh $(CARGO) test --release --locked
	bash scripts/with-chromium.sh $(CARGO) test --release --locked -p exfilwatch-investigate

## `exfilwatch investigate` runs this binary (polars: a long first build, not part of `make run`).
investigate: deps
	$(CARGO) build --release --locked --bin exfilwatch
	$(CARGO) build --release --locked -p exfilwatch-investigate

## Benchmarks: criterion micro-benchmarks, then the whole pipeline (see BENCHMARKS.md).
bench: bench-criterion bench-pipeline

bench-criterion:
	$(CARGO) bench --locked --bench decode --bench detect

bench-pipeline:
	python3 bench/pipeline.py

## `exfilwatch investigate` of one account over a 10-million-record export vs DuckDB (BENCHMARKS.md).
bench-investigate:
	python3 bench/investigate.py

## The streaming benchmark: catch-up throughput vs a bare rdkafka drain, alert latency.
bench-kafka:
	$(CARGO) build --release --locked --bin exfilwatch --bin gen-logs --example kafka_bench
	test -f bench-data/bench-2000000-1000-8.jsonl || (mkdir -p bench-data && target/release/gen-logs bench --records 2000000 --keys 1000 --origins-per-key 8 --out bench-data/bench-2000000-1000-8.jsonl)
	bash scripts/with-tansu.sh target/release/examples/kafka_bench bench-data/bench-2000000-1000-8.jsonl 1000000

## Scale-out: one rekey instance, then one vs two detect instances catching up (docs/scaling.md).
bench-scale:
	$(CARGO) build --release --locked --bin exfilwatch --bin gen-logs --example kafka_bench
	test -f bench-data/bench-2000000-1000-8.jsonl || (mkdir -p bench-data && target/release/gen-logs bench --records 2000000 --keys 1000 --origins-per-key 8 --out bench-data/bench-2000000-1000-8.jsonl)
	bash scripts/with-tansu.sh target/release/examples/kafka_bench scale bench-data/bench-2000000-1000-8.jsonl 600000

## Detection accuracy on labelled scenarios (BENCHMARKS.md): for each seed, `gen-logs scenarios`
## writes a month and a half of traffic with planted thefts under bench-data/scenarios/seed-N
## (again only when a file of the generator changed), `exfilwatch replay` (default configuration) writes
## the alerts, and bench/eval.py prints recall per theft kind, false alerts per 1000 key-days and
## the delay from 1 GiB to the first alert. EVAL_ARGS=--check: exit 1 when a goal is missed.
EVAL_SEEDS ?= 1 2 3
EVAL_DIR := bench-data/scenarios
EVAL_ARGS ?=
BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/release
eval:
	$(CARGO) build --release --locked --bin exfilwatch --bin gen-logs
	@for s in $(EVAL_SEEDS); do \
	  d=$(EVAL_DIR)/seed-$$s; \
	  if [ -n "$$(find src/bin/gen-logs.rs src/bin/gen-logs -newer $$d/labels.json 2>/dev/null)" ] || ! [ -f $$d/labels.json ]; then \
	    rm -rf $$d && $(BIN_DIR)/gen-logs scenarios --seed $$s --out $$d || exit 1; \
	  fi; \
	  echo "replay seed $$s"; \
	  $(BIN_DIR)/exfilwatch replay -q $$d/logs -o $$d/alerts.jsonl || exit 1; \
	done
	python3 bench/eval.py $(EVAL_ARGS) $(addprefix $(EVAL_DIR)/seed-,$(EVAL_SEEDS))

## Regenerates sample-logs/ from the deterministic generator (contoso's hour files gzipped).
sample-logs:
	$(CARGO) run --release --locked --bin gen-logs -- sample --out $(SAMPLE_LOGS)
	find $(SAMPLE_LOGS)/contoso -name PT1H.json -exec gzip -n -9 -f {} +

## Rebuilds the shipped model models/sample-baseline: the sample logs' days before the theft
## (deterministic: the same files, byte for byte; tests/model.rs checks it is current).
SAMPLE_MODEL_UNTIL := 2021-08-17T00:00:00Z
train-sample:
	$(CARGO) run --release --locked --quiet --bin exfilwatch -- train -q $(SAMPLE_LOGS) --until $(SAMPLE_MODEL_UNTIL) --out models/sample-baseline

fmt:
	$(CARGO) fmt

## Formatting, clippy, and `cargo deny` on Cargo.lock (advisories from the vendored RustSec
## database, licences, duplicate crates, sources: deny.toml; scripts/cargo-deny.sh installs it).
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) clippy --release --locked --all-targets -p exfilwatch-investigate -- -D warnings
	bash scripts/cargo-deny.sh

clean:
	$(CARGO) clean
