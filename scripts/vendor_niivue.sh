#!/usr/bin/env bash
# Dev-time only: fetch NiiVue from the npm registry and copy its browser bundle (gzipped) and the
# licences of everything bundled in it into voxssl/explore/static/niivue/. `voxssl explore` serves
# these files itself; nothing is fetched at run time. Usage: bash scripts/vendor_niivue.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-0.69.0}
DEST=voxssl/explore/static/niivue
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm init -y >/dev/null && npm install --no-audit --no-fund --omit=optional "@niivue/niivue@$VERSION" >/dev/null)
PKG="$WORK/node_modules/@niivue/niivue"
mkdir -p "$DEST"
gzip -9 -n -c "$PKG/dist/niivue.umd.js" > "$DEST/niivue.umd.js.gz"
{
    echo "NiiVue $VERSION (@niivue/niivue on npm, https://github.com/niivue/niivue): BSD-2-Clause"
    echo
    cat "$DEST/LICENSE.niivue"
    for dep in $(cd "$WORK/node_modules" && ls -d @*/* [!@]* | grep -v '^@niivue/niivue$' | grep -v '^@rollup/'); do
        dir="$WORK/node_modules/$dep"
        licence=$(ls "$dir" | grep -iE '^licen[cs]e' | head -1 || true)
        version=$(node -p "require('$dir/package.json').version")
        spdx=$(node -p "JSON.stringify(require('$dir/package.json').license)")
        echo
        echo "================================================================================"
        echo "$dep $version ($spdx), bundled in niivue.umd.js"
        echo "================================================================================"
        if [ -n "$licence" ]; then cat "$dir/$licence"; else echo "(no licence file in the package; licence field: $spdx)"; fi
    done
} > "$DEST/THIRD_PARTY_LICENSES.txt"
node -e "
const p = require('$PKG/package.json');
const crypto = require('crypto'), fs = require('fs');
const js = fs.readFileSync('$PKG/dist/niivue.umd.js');
fs.writeFileSync('$DEST/VERSION.json', JSON.stringify({
  package: p.name, version: p.version, license: p.license,
  file: 'dist/niivue.umd.js (stored gzipped as niivue.umd.js.gz)',
  sha256: crypto.createHash('sha256').update(js).digest('hex'),
  bytes: js.length,
  vendored_by: 'scripts/vendor_niivue.sh'
}, null, 1) + '\n');
"
ls -l "$DEST"
