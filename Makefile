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

.PHONY: install models sample demo test smoke lint bench bench-quick soak clean web-assets face-photos contract-tools contract asyncapi rules base-image image image-gpu image-test image-tags

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[models,dev]'
	touch $(STAMP)

install: $(STAMP)

$(MODELS): | $(STAMP)
	$(BIN)/framepipe models build --models-dir .cache/models

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

# Real portraits for the face tests, from the face_recognition sdist on PyPI (MIT; the photos
# are official US government portraits): two photos of one person, one of another.
FR_SDIST := face_recognition-1.3.0
FACE_PHOTOS := .cache/face-photos/obama2.jpg
$(FACE_PHOTOS): | $(STAMP)
	mkdir -p .cache/face-photos/sdist
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d .cache/face-photos/sdist face-recognition==1.3.0
	tar -xzf .cache/face-photos/sdist/$(FR_SDIST).tar.gz -C .cache/face-photos --strip-components=3 \
	  $(FR_SDIST)/tests/test_images/obama.jpg $(FR_SDIST)/tests/test_images/obama2.jpg $(FR_SDIST)/tests/test_images/biden.jpg

face-photos: $(FACE_PHOTOS)

# The mask attribute's BASELINE classifier, trained on masks drawn on those portraits and on
# the ones scikit-image and matplotlib ship (docs/attributes.md; about 1.5 min on 2 cores), with
# its leave-one-person-out folds (mask_baseline_folds/, for the tests). Rebuilt when its recipe changes.
MASK_MODEL := .cache/models/mask_baseline.onnx
$(MASK_MODEL): $(FACE_PHOTOS) $(wildcard framepipe/stages/analysis/attributes/mask_*.py) | $(STAMP)
	$(BIN)/python -m framepipe.stages.analysis.attributes.mask_baseline --models-dir .cache/models --photos-dir .cache/face-photos

models: $(MASK_MODEL)

demo: $(STAMP) models sample web-assets
	$(BIN)/framepipe demo

test: $(STAMP) models web-assets contract-tools face-photos
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The newcomer pass: misuse of the command line, signals, a second run in one folder.
smoke: $(STAMP) models
	$(BIN)/python -m pytest -q tests/cli/test_newcomer.py tests/local/test_lifecycle.py tests/local/test_statelock.py

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

# --- container images (docs/kubernetes.md) ------------------------------------------------
# `make image` builds docker/Dockerfile with podman; the tag is the one the k8s manifests use
# (k8s.image in framepipe/core/cluster_settings.py; tests/cluster/test_image_build.py keeps them equal).
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE       ?= ghcr.io/framepipe/framepipe:$(VERSION)
GPU_IMAGE   ?= ghcr.io/framepipe/framepipe-gpu:$(VERSION)
# The usual public Python base; `make image BASE_IMAGE=$(LOCAL_BASE)` where no registry of base
# images is reachable (then `make base-image` first makes it from Debian's packages with mmdebstrap).
BASE_IMAGE  ?= docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE  := localhost/framepipe-base:bookworm
BASE_TAR    := .cache/image/base-bookworm.tar
PODMAN_BUILD := podman build --isolation=chroot --network=host
# no manuals, translations or docs in the base (copyright files stay); the merged-usr hook
# spares the base the usrmerge package and the Perl it pulls in
BASE_DPKG_EXCLUDES := $(foreach p,/usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/doc/*,--dpkgopt='path-exclude=$(p)') \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-include=/usr/share/locale/locale.alias'

$(BASE_TAR):
	mkdir -p $(dir $@)
	mmdebstrap --variant=minbase --format=tar --include=python3,python3-venv,python-is-python3,ca-certificates \
	  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr $(BASE_DPKG_EXCLUDES) bookworm $@.part
	mv $@.part $@

# Imported once: a new import is a new image ID, which would rebuild every layer above it
# (to refresh: podman rmi $(LOCAL_BASE); rm $(BASE_TAR)).
base-image:
	podman image exists $(LOCAL_BASE) || { $(MAKE) --no-print-directory $(BASE_TAR) \
	  && podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' $(BASE_TAR) $(LOCAL_BASE); }

# A TLS-inspecting proxy's CA for pip (PIP_CERT, as pip reads it here) is mounted into the
# build's RUN steps only; it never lands in a layer.
BUILD_CA ?= $(PIP_CERT)
BUILD_CA_ARGS := $(if $(BUILD_CA),--volume $(abspath $(BUILD_CA)):/run/build-ca.crt:ro --build-arg PIP_CERT=/run/build-ca.crt)

image: web-assets $(if $(filter $(LOCAL_BASE),$(BASE_IMAGE)),base-image)
	$(PODMAN_BUILD) -f docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) $(BUILD_CA_ARGS) -t $(IMAGE) .
	podman image inspect --format '{{.Id}} {{.Size}}' $(IMAGE)

# Same stages on NVIDIA's TensorRT base (from NVIDIA's registry: not built by CI or here).
image-gpu: web-assets
	$(PODMAN_BUILD) -f docker/Dockerfile.gpu $(if $(GPU_BASE_IMAGE),--build-arg BASE_IMAGE=$(GPU_BASE_IMAGE)) \
	  $(BUILD_CA_ARGS) -t $(GPU_IMAGE) .

image-tags:
	@echo $(IMAGE) $(GPU_IMAGE)

# Slow and opt-in (not in .ci/run): runs the built image's filesystem under chroot, read-only,
# as the image's non-root user (docker/image_smoke.sh says how).
image-test:
	docker/image_smoke.sh $(IMAGE)

# Not in CI: real-time cameras for SOAK_MINUTES (30), sampling RSS/fds/threads/backlog (bench/soak.py).
# Run on a quiet machine; exits 1 unless steady after warm-up (bench/soak.py says what that means).
soak: $(STAMP) models
	$(BIN)/python -m bench.soak --minutes $${SOAK_MINUTES:-30} --cameras $${SOAK_CAMERAS:-3}
