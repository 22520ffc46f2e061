#!/usr/bin/env bash
# Regenerates the generated parts of docs/ (the config key reference) from the built binaries.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
doc="$root/docs/configuration.md"
reference=$("$bin/kto-ckpt" config --reference)
/usr/bin/python3 - "$doc" "$reference" <<'PY'
import sys
path, reference = sys.argv[1], sys.argv[2] + "\n"
text = open(path).read()
begin, end = "<!-- BEGIN CONFIG REFERENCE -->\n", "<!-- END CONFIG REFERENCE -->"
i, j = text.index(begin) + len(begin), text.index(end)
open(path, "w").write(text[:i] + reference + text[j:])
PY
echo "[docs] updated $doc"
