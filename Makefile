# framepipe — every target sets up what it needs; start with `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODELS := .cache/models/face_detection_full_range.onnx .cache/models/face_detection_short_range.onnx

.PHONY: install models sample demo test lint bench clean

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

demo: $(STAMP) models sample
	$(BIN)/framepipe demo

test: $(STAMP) models
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check framepipe tests bench
	$(BIN)/ruff format --check framepipe tests bench
	$(BIN)/mypy framepipe

clean:
	rm -rf $(VENV) .cache .framepipe output
