#!/usr/bin/env bash
# Resolve infra/python/<name>.txt afresh in a throwaway virtualenv and write <name>.lock: every
# package pip installed, pinned, marked for the CPython it was resolved on (the Makefile
# installs each venv with its .lock as constraints; another Python resolves from the .txt).
# Usage: infra/python/lock.sh PYTHON NAME...
set -euo pipefail
python=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# CI (.ci/run) and this machine run CPython 3.11: locks made on another Python would be
# ignored there (their markers would not match).
[ "$version" = 3.11 ] || echo "warning: $python is Python $version, not 3.11, which CI runs; its locks will not apply there" >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in "$@"; do
  "$python" -m venv "$scratch/$name"
  "$scratch/$name/bin/pip" install --quiet --disable-pip-version-check -r "$here/$name.txt"
  # Written aside and moved into place: a failed run leaves the old lock whole.
  {
    echo "# Every package of .venv/$name as resolved from $name.txt (pip freeze), so a fresh clone"
    echo "# installs what was tested, whatever its dependencies have released since. Used as pip"
    echo "# constraints, only on the Python it was resolved on (the marker); another Python"
    echo "# resolves from $name.txt alone. Written by lock.sh (\`make python-locks\`)."
    "$scratch/$name/bin/pip" freeze --all --disable-pip-version-check \
      | grep -Ev '^pip==' \
      | sed "s/\$/ ; python_version == \"$version\"/"
  } > "$scratch/$name.lock"
  mv "$scratch/$name.lock" "$here/$name.lock"
  echo "wrote $here/$name.lock ($(grep -vc '^#' "$here/$name.lock") packages, Python $version)"
done
