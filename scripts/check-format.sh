#!/usr/bin/env bash
# Checks that every C++ file of the repository is formatted by clang-format 14 with the repo's
# .clang-format (the version matters: others format differently). Exit status 1 and the
# differences when one is not; `--fix` formats them in place instead.
#   scripts/check-format.sh [--fix]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
fix=0
case "${1:-}" in
  --fix) fix=1 ;;
  "") ;;
  *) echo "usage: scripts/check-format.sh [--fix]" >&2; exit 2 ;;
esac

tool=""
for candidate in clang-format-14 clang-format; do
  if command -v "$candidate" >/dev/null && "$candidate" --version | grep -q 'version 14\.'; then
    tool=$candidate
    break
  fi
done
if [[ -z "$tool" ]]; then
  echo "[format] clang-format 14 not found (Debian: apt-get install clang-format-14; scripts/install-deps.sh --test)" >&2
  exit 2
fi

# Tracked and new (not ignored) files, or every source file when this is not a git checkout (a source tarball).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.cpp' '*.h' '*.hpp' '*.cu' '*.cuh')
else
  mapfile -t files < <(find src include tests bench data_tools cmake \( -name '*.cpp' -o -name '*.h' \) -print | sort)
fi
if [[ $fix -eq 1 ]]; then
  "$tool" -i "${files[@]}"
  echo "[format] formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  "$tool" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [[ ${#bad[@]} -gt 0 ]]; then
  echo "[format] ${#bad[@]} of ${#files[@]} files differ from .clang-format ($tool):" >&2
  for f in "${bad[@]}"; do
    echo "--- $f" >&2
    diff -u "$f" <("$tool" "$f") | head -n 40 >&2 || true
  done
  echo "[format] fix with: scripts/check-format.sh --fix" >&2
  exit 1
fi
echo "[format] ${#files[@]} files formatted as .clang-format says ($tool)"
