# framepipe — every target sets up what it needs; start with `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := .cache/models/face_detection_full_range.onnx .cache/models/face_detection_short_range.onnx

HLSJS_VERSION := 1.7.4
HLSJS  := framepipe/web/static/vendor/hls.min.js

# The contract checks' npm packages (AsyncAPI parser, NATS JetStream client, ajv): gitignored.
CONTRACT_NPM := .cache/npm-contract
CONTRACT_STAMP := $(CONTRACT_NPM)/.installed-v1
CONTRACT_PACKAGES := @asyncapi/parser@3.6.6 @nats-io/jetstream@3.4.0 @nats-io/transport-node@3.4.0 ajv@8.20.0

.PHONY: install models sample demo test lint bench bench-quick clean web-assets contract-tools contract asyncapi rules

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[models,dev]'
	touch $(STAMP)

install: $(STAMP)

$(MODELS): | $(STAMP)
	$(BIN)/framepipe models build

models: $(MODELS)

sample: $(STAMP)
	@test -f .cache/media/sample.mp4 || $(BIN)/framepipe sample

# hls.js for the web console, from npm at build time (gitignored, never committed).
$(HLSJS):
	npm install --prefix .cache/npm --no-audit --no-fund --no-save --silent hls.js@$(HLSJS_VERSION)
	mkdir -p $(dir $(HLSJS))
	cp .cache/npm/node_modules/hls.js/dist/hls.min.js $(HLSJS)

web-assets: $(HLSJS)

$(CONTRACT_STAMP):
	npm install --prefix $(CONTRACT_NPM) --no-audit --no-fund --no-save --silent $(CONTRACT_PACKAGES)
	touch $(CONTRACT_STAMP)

contract-tools: $(CONTRACT_STAMP)

# docs/asyncapi.json and docs/schemas/, regenerated from framepipe/core (commit the result).
asyncapi: $(STAMP)
	$(BIN)/python -m framepipe.core.asyncapi docs

# The AsyncAPI document through the official parser (tests/core/test_schemas.py does it too).
contract: contract-tools
	NODE_PATH=$(CONTRACT_NPM)/node_modules node tests/node/validate-asyncapi.cjs docs/asyncapi.json

# Prometheus rules: syntax and unit tests with promtool (Debian package `prometheus`).
rules:
	promtool check rules framepipe/cluster/monitoring/rules.yml
	cd framepipe/cluster/monitoring && promtool test rules rules_test.yml

demo: $(STAMP) models sample web-assets
	$(BIN)/framepipe demo

test: $(STAMP) models web-assets contract-tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check framepipe tests bench
	$(BIN)/ruff format --check framepipe tests bench
	$(BIN)/mypy framepipe
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .cache .framepipe output

bench: $(STAMP) models
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

bench-quick: $(STAMP) models
	$(BIN)/python -m bench.run_all --quick $(BENCH_ARGS)
