#!/usr/bin/env bash
# Install .venv/<name> from infra/python/<name>.lock, its pins for this Python with their
# hashes checked, or, for a Python it does not cover, from <name>.txt (the Makefile's venv
# rule). One install of a venv at a time: `make run` and `make test` started together on a
# fresh clone each removed the venv the other was filling. An install that finds the venv
# made meanwhile, by the one it waited for, is done.
# Usage: infra/python/install.sh PYTHON NAME
set -euo pipefail
# A CDPATH in the environment would make `cd <relative dir>` print the directory, doubling it
# in a captured path.
unset CDPATH
python=$1 name=$2
here=$(cd "$(dirname "$0")" && pwd)
venvs="$here/../../.venv"
venv="$venvs/$name" txt="$here/$name.txt" lock="$here/$name.lock"
mkdir -p "$venvs"
# Current: installed since its requirements changed, by a Python that still runs and is this
# one's version (a Python upgraded or removed under the venv leaves its links dangling). An
# install under way has no .installed yet (it is touched last).
minor='import sys; print("%d.%d" % sys.version_info[:2])'
wanted=$("$python" -c "$minor" 2>/dev/null || true)
locked() { grep -qF "; python_version == \"$1\"" "$lock"; }
# The default python3 at a version the lock does not cover (3.14, say, would resolve every
# dependency afresh, some from source): the newest covered python3.X on the PATH instead.
substituted=
if [ "$python" = python3 ] && [ -n "$wanted" ] && ! locked "$wanted"; then
  for version in 3.13 3.12 3.11 3.10; do
    if locked "$version" && [ "$(python$version -c "import ensurepip; $minor" 2>/dev/null)" = "$version" ]; then
      substituted="note: python3 is Python $wanted, which infra/python/$name.lock does not cover: using python$version (set PYTHON to choose)"
      python=python$version wanted=$version
      break
    fi
  done
fi
current() {
  [ "$venv/.installed" -nt "$txt" ] && [ "$venv/.installed" -nt "$lock" ] \
    && [ -n "$wanted" ] && [ "$("$venv/bin/python" -c "$minor" 2>/dev/null)" = "$wanted" ]
}
if current; then
  exit 0
fi
# A virtualenv, or a clear word on what this Python lacks (3.10 or later: the pinned moto,
# cfn-lint and SAM CLI need it; Debian and Ubuntu ship venv's ensurepip apart, in python3-venv).
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
  || { echo "$python is missing or older than Python 3.10, which the pinned tools need: set PYTHON to a newer one" >&2; exit 1; }
"$python" -c 'import ensurepip' 2>/dev/null \
  || { echo "$python cannot make virtualenvs (no ensurepip): install python3-venv, or set PYTHON" >&2; exit 1; }
# The lock is on this shell's descriptor 9, taken by Python (flock(2) on Linux and macOS alike,
# where the flock command is not): it lasts until this script ends.
exec 9>"$venvs/.$name.installing"
if ! "$python" -c 'import fcntl; fcntl.flock(9, fcntl.LOCK_EX | fcntl.LOCK_NB)' 2>/dev/null; then
  echo "waiting for another install of .venv/$name" >&2
  "$python" -c 'import fcntl; fcntl.flock(9, fcntl.LOCK_EX)'
fi
if current; then
  exit 0
fi
if [ -n "$substituted" ]; then echo "$substituted" >&2; fi
# A pin of the .txt the lock does not hold for this Python (the .txt changed, the locks not
# written again) would install the lock's set while the change looked tested.
if locked "$wanted"; then
  stale=$("$python" - "$txt" "$lock" "$wanted" <<'PY'
import re, sys
txt, lock, minor = sys.argv[1:]
pin = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#\\]+)")
def key(m):
    # Names as pip compares them; versions without trailing zero releases (1.58 is 1.58.0).
    return re.sub(r"[-_.]+", "-", m[1]).lower(), re.sub(r"(\.0)+$", "", m[3])
with open(lock) as lines:
    held = {key(m) for line in lines if (m := pin.match(line)) and f'python_version == "{minor}"' in line}
with open(txt) as lines:
    print(" ".join(m[0].strip() for line in lines if (m := pin.match(line)) and key(m) not in held))
PY
  )
  if [ -n "$stale" ]; then
    echo "infra/python/$name.txt pins $stale, which infra/python/$name.lock does not hold for Python $wanted: run make python-locks PYTHON=$python (once per Python the locks cover)" >&2
    exit 1
  fi
fi
# A Python the lock covers installs exactly its pins, every file checked against the hashes
# the lock holds (--require-hashes; --no-deps: the pins are the whole venv, as pip freeze
# listed it); any other resolves the .txt afresh, unchecked.
if locked "$wanted"; then
  echo "installing .venv/$name from infra/python/$name.lock (its pins for Python $wanted, hashes checked)"
  from=(--require-hashes --no-deps -r "$lock")
else
  echo "note: infra/python/$name.lock holds for CPython 3.10 to 3.13; Python $wanted resolves $name.txt afresh" >&2
  from=(-r "$txt")
fi
rm -rf "$venv"
"$python" -m venv "$venv"
# More patience than pip's defaults (5 retries, 15 s): a fresh machine or CI installs every
# venv from PyPI, and one slow answer would fail the whole `make test`.
"$venv/bin/pip" install --quiet --disable-pip-version-check --retries 10 --timeout 60 "${from[@]}" || {
  # pip's own last line ("No matching distribution found ... (from versions: none)") reads
  # like a bad pin when the index was never reached.
  echo "could not install .venv/$name: pip failed (above). Without access to PyPI (a network, proxy or PIP_INDEX_URL problem) pip reports every package as not found, or as conflicting." >&2
  if locked "$wanted"; then
    echo "If pip said THESE PACKAGES DO NOT MATCH THE HASHES, a file changed on the index or on its way since infra/python/$name.lock was written: do not install it (a release made again on purpose needs make python-locks)." >&2
  else
    echo "Or a pinned tool does not support Python $wanted, which infra/python/$name.lock does not cover: set PYTHON to a Python 3.10 to 3.13." >&2
  fi
  exit 1
}
# The pins without their dependencies: a lock missing one (written by hand, say) says so here
# rather than as an import error later.
if ! broken=$("$venv/bin/pip" check --disable-pip-version-check 2>&1); then
  echo "$broken" >&2
  if locked "$wanted"; then
    echo "could not install .venv/$name: infra/python/$name.lock lacks a dependency (above): run make python-locks" >&2
  else
    echo "could not install .venv/$name: what pip resolved from infra/python/$name.txt is inconsistent (above)" >&2
  fi
  exit 1
fi
touch "$venv/.installed"
