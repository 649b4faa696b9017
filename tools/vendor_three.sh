#!/usr/bin/env bash
# Rebuild viewer/assets/three.min.js, the three.js code that `pointseg view --html` embeds in its pages.
#
# One minified script (IIFE defining the global THREE) holding only the parts of three.js the page
# uses, tree-shaken by esbuild from the npm package, plus OrbitControls. The page inlines it, so a
# page opens from file:// with no network. Needs node + npm (network) only when rebuilding:
#
#   tools/vendor_three.sh [THREE_VERSION]      # default 0.187.0
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-0.187.0}
ESBUILD=0.28.2
OUT=$PWD/viewer/assets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "three@$VERSION" "esbuild@$ESBUILD"
# Every name viewer/assets/page.js reads from THREE; add here when the page needs more.
cat > entry.js <<'JS'
export {
  WebGLRenderer, Scene, PerspectiveCamera, BufferGeometry, BufferAttribute, Points, ShaderMaterial,
  DataTexture, RGBAFormat, UnsignedByteType, NearestFilter, Vector3, Matrix4, REVISION,
} from 'three';
export { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
JS
node_modules/.bin/esbuild entry.js --bundle --minify --format=iife --global-name=THREE \
    --legal-comments=none --target=es2020 --log-level=warning --outfile=bundle.js
{
    echo "/* three.js $VERSION (npm 'three', https://threejs.org), MIT License, Copyright (c) 2010-2026"
    echo "   three.js authors; full text in the page and in viewer/assets/THREE_LICENSE. Only the classes"
    echo "   pointseg's page uses, bundled and minified with esbuild $ESBUILD by tools/vendor_three.sh. */"
    cat bundle.js
} > "$OUT/three.min.js"
cp node_modules/three/LICENSE "$OUT/THREE_LICENSE"
echo "wrote $OUT/three.min.js ($(wc -c < "$OUT/three.min.js") bytes) from three $VERSION"
