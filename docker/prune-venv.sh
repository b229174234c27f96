#!/bin/sh
# Cut from a virtualenv what no framepipe process reads, to keep the image small:
# - the wheels' own test suites (numpy, scipy, scikit-image, matplotlib... ship theirs);
# - C headers and Cython sources (only a compiler reads them, and the image has none);
# - ONNX Runtime's offline tools (transformer optimiser, quantisation, conversion scripts,
#   example models): `import onnxruntime` and InferenceSession do not load them;
# - matplotlib's sample data.
# scikit-image's data/ stays: `framepipe sample` draws its face from skimage.data.
# Usage: prune-venv.sh VENV
set -eu
venv="$1"
site="$(echo "$venv"/lib/python3*/site-packages)"
test -d "$site"
before="$(du -sm "$site" | cut -f1)"
find "$site" -depth -type d \( -name tests -o -name testing_data \) -path '*/site-packages/*/*' \
  -not -path '*/numpy/testing/*' -exec rm -rf {} +
find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' -o -name '*.hpp' \) -delete
rm -rf "$site"/numpy/_core/include "$site"/numpy/core/include \
       "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
       "$site"/onnxruntime/tools "$site"/onnxruntime/datasets \
       "$site"/matplotlib/mpl-data/sample_data
after="$(du -sm "$site" | cut -f1)"
echo "prune-venv: $site ${before} MiB -> ${after} MiB"
