#!/usr/bin/env bash
# Installs a headless Chromium into .browser/ for the test that opens report.html in a real
# browser engine: the @sparticuz/chromium build from the npm registry (a self-contained
# Chromium for Linux x86-64; needs node and npm), pinned by version and checksum.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/require_disk.sh
source scripts/require_disk.sh
VERSION=147.0.0
SHA256=18fe5404ce845594cd7d592fc07f37a19514079ba4d9c27192ad8b908743f16b
if [[ "$(cat .browser/.installed 2>/dev/null)" != "$VERSION" ]]; then
  require_disk 1 .browser
  command -v npm >/dev/null || { echo "setup_browser: npm (Node.js) is needed" >&2; exit 1; }
  echo "[setup] fetching headless Chromium (@sparticuz/chromium $VERSION)"
  rm -rf .browser
  mkdir -p .browser/pack
  (cd .browser/pack && npm pack --silent "@sparticuz/chromium@$VERSION" >/dev/null)
  tarball=.browser/pack/sparticuz-chromium-$VERSION.tgz
  echo "$SHA256  $tarball" | sha256sum --check --quiet
  tar xzf "$tarball" -C .browser/pack
  # The binary and its libraries ship Brotli-compressed; Node's zlib unpacks them.
  node -e '
    const fs = require("fs"), zlib = require("zlib");
    for (const name of ["chromium", "al2023.tar", "swiftshader.tar"]) {
      const data = fs.readFileSync(".browser/pack/package/bin/" + name + ".br");
      fs.writeFileSync(".browser/" + name, zlib.brotliDecompressSync(data));
    }'
  mkdir -p .browser/lib
  tar xf .browser/al2023.tar -C .browser/lib
  tar xf .browser/swiftshader.tar -C .browser/lib
  rm -rf .browser/pack .browser/al2023.tar .browser/swiftshader.tar
  chmod +x .browser/chromium
  echo "$VERSION" > .browser/.installed
fi
LD_LIBRARY_PATH="$PWD/.browser/lib/lib:$PWD/.browser/lib" .browser/chromium --version
