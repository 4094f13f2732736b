#!/usr/bin/env bash
# Resolve infra/python/<name>.txt afresh in a throwaway virtualenv and write its pins into
# <name>.lock, marked for the CPython they were resolved on; the pins of other Pythons already
# there are kept (install.sh installs a Python's pins from its .lock, hashes checked, so each
# Python gets its own tested set; one with none resolves from the .txt).
# Usage: infra/python/lock.sh PYTHON NAME...   (once per Python: 3.10 to 3.13)
set -euo pipefail
# A CDPATH in the environment would make `cd <relative dir>` print the directory, doubling it
# in a captured path.
unset CDPATH
python=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
marker="python_version == \"$version\""
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in "$@"; do
  "$python" -m venv "$scratch/$name"
  "$scratch/$name/bin/pip" install --quiet --disable-pip-version-check -r "$here/$name.txt"
  # The machines its requirements want a pin on, when not all (install.sh installs with
  # --no-deps, so a pin must say it).
  "$scratch/$name/bin/python" "$here/markers.py" "$here/$name.txt" > "$scratch/$name.machines"
  # Written aside and moved into place: a failed run leaves the old lock whole.
  {
    echo "# Every package of .venv/$name as resolved from $name.txt (pip freeze), per CPython, so a"
    echo "# fresh clone installs what was tested, whatever its dependencies have released since."
    echo "# install.sh installs a Python's lines alone (their marker), each file checked against its"
    echo "# hashes (pip --require-hashes); a Python with no lines resolves from $name.txt alone."
    echo "# Written by lock.sh (\`make python-locks PYTHON=...\`, once per Python), hashes by hash_lock.py."
    {
      # Other Pythons' pins, as they were (their hash lines, indented, are written anew).
      { grep -E '^[A-Za-z0-9]' "$here/$name.lock" 2>/dev/null || true; } | sed 's/ *\\$//' \
        | { grep -vF "; $marker" || true; }
      # Each pin under this Python's marker, and its machines' when it has some.
      "$scratch/$name/bin/pip" freeze --all --disable-pip-version-check \
        | grep -Ev '^pip==' \
        | awk -F'\t' -v base="$marker" '
            FILENAME == ARGV[1] { machines[$1] = $2; next }
            { name = tolower(substr($0, 1, index($0, "==") - 1)); gsub(/[-_.]+/, "-", name)
              print $0 " ; " base (name in machines ? " and (" machines[name] ")" : "") }' \
          "$scratch/$name.machines" -
    } | LC_ALL=C sort -t'"' -k2,2 -k1,1f
  } > "$scratch/$name.lock"
  # Every pin with the SHA-256 of its release's files, which install.sh checks.
  "$python" "$here/hash_lock.py" "$scratch/$name.lock"
  mv "$scratch/$name.lock" "$here/$name.lock"
  echo "wrote $here/$name.lock ($(grep -c "; $marker" "$here/$name.lock") packages for Python $version)"
done
