#!/usr/bin/env bash
# Run a command with the local AWS emulator (moto, infra/local/emulator.py) started on 127.0.0.1 and the
# standard SDK environment pointing at it; stop the emulator when the command ends.
#   infra/local/emulator.sh cargo test --workspace
# The emulator's port is free-picked unless EMULATOR_PORT is set.
set -euo pipefail
# A CDPATH in the environment would make `cd <relative dir>` print the directory, doubling it
# in a captured path.
unset CDPATH
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv/emulator"
# The mark install.sh leaves when the whole requirement set went in (moto_server alone may be
# a half-finished install's).
[ -f "$venv/.installed" ] && [ -x "$venv/bin/moto_server" ] || { echo "emulator not installed: run 'make deps'" >&2; exit 2; }

# Only the emulator, for it and the command: none of the caller's AWS settings but the region
# (a profile, real credentials, a per-service endpoint such as AWS_ENDPOINT_URL_S3, which would
# win over AWS_ENDPOINT_URL, FIPS or dual-stack endpoints, retry settings that change timings).
# The aws-lc crates' build settings (AWS_LC_SYS_*) are the build's, not the SDK's: kept.
for name in $(compgen -e); do
  case $name in AWS_REGION|AWS_DEFAULT_REGION|AWS_LC_*) ;; AWS_*) unset "$name" ;; esac
done
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# Loopback never through a proxy (the emulator, and the servers tests start).
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# Stop the emulator when the command ends; keep its log only when the command failed (a
# success or a Ctrl-C leaves none behind). '|| true' on both: under set -e a failing kill
# (moto already gone after Ctrl-C) would turn the command's own exit status into 1. Set
# before the emulator starts: only a signal in the instant between its start and `pid=$!`
# can leave it running.
pid= cmd= log=
stop_emulator() {
  local rc=$?
  # The command too, should a signal have ended this script before it was waited for.
  [ -z "$cmd" ] || kill -TERM -- -"$cmd" 2>/dev/null || true
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [ -n "$log" ] || return 0
  case $rc in
    0|130) rm -f "$log" ;;
    *) echo "emulator log kept: $log" >&2 ;;
  esac
}
trap stop_emulator EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 131' QUIT

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# A port asked for must be free: otherwise the readiness probe below would be answered by
# whatever holds it (another run's emulator), and this run would use that. SO_REUSEADDR, as
# the emulator binds: a previous run's connections in TIME_WAIT do not make it busy.
if [ -n "${EMULATOR_PORT:-}" ] && ! [[ $EMULATOR_PORT =~ ^[1-9][0-9]{0,4}$ && $EMULATOR_PORT -le 65535 ]]; then
  echo "EMULATOR_PORT=$EMULATOR_PORT is not a port number (1-65535): unset it to pick a free port" >&2
  exit 1
fi
if [ -n "${EMULATOR_PORT:-}" ] && ! "$venv/bin/python" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$EMULATOR_PORT" 2>/dev/null; then
  echo "EMULATOR_PORT=$EMULATOR_PORT is in use (another run's emulator?): unset it to pick a free port" >&2
  exit 1
fi
mkdir -p "$root/.local"
# Logs kept by failed runs: a day's worth is enough to read them.
find "$root/.local" -maxdepth 1 -name 'emulator-*.log' -mtime +0 -exec rm -f {} + 2>/dev/null || true

# Every test's pooled connections stay open against the emulator at once: macOS allows a
# process 256 open files by default. The soft limit is raised (never lowered) to 4096, or the
# hard limit when lower, for this shell: the emulator and the command it wraps (the tests,
# the clients' ends) both.
open_files=$(ulimit -Sn)
if [ "$open_files" != unlimited ] && [ "$open_files" -lt 4096 ]; then
  ulimit -Sn 4096 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
fi

# Start the emulator on `port` and wait up to 60 s (a busy 2-core machine starts moto slowly)
# for it to answer. The probe ignores any proxy settings (the emulator is on loopback) and
# takes only this emulator's answer. Returns 1 when it exited first, 3 when it exited because
# its port was taken (between being picked and bound, by another run started at the same
# moment), 2 when it never answered.
start_emulator() {
  # The script's pid too: another run that picked the same port must not truncate this log.
  log="$root/.local/emulator-$port-$$.log"
  # emulator.py serves moto with DynamoDB requests and S3 conditional writes made atomic and keep-alive connections (see its docstring).
  # Without .ci/run's build-directory lock (fd 9): an emulator left behind by a killed run must
  # not hold the next run off for good (make and cargo keep it while they build).
  MOTO_PORT=$port "$venv/bin/python" "$root/infra/local/emulator.py" --host 127.0.0.1 --port "$port" >"$log" 2>&1 9>&- &
  pid=$!
  local deadline=$((SECONDS + 60)) answered
  local probe='import urllib.request as u, sys; print(u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=1).read().decode())'
  while (( SECONDS < deadline )); do
    answered=$("$venv/bin/python" -c "$probe" "http://127.0.0.1:$port/stemvault-emulator/pid" 2>/dev/null || true)
    [ "$answered" != "$pid" ] || return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      pid=
      if grep -q "Address already in use" "$log"; then return 3; fi
      return 1
    fi
    sleep 0.2
  done
  return 2
}

# A free-picked port is tried up to three times: each pick is free when picked, not held.
attempt=1
while :; do
  port=${EMULATOR_PORT:-$(free_port)}
  started=0
  start_emulator || started=$?
  [ "$started" != 0 ] || break
  if [ "$started" = 3 ] && [ -z "${EMULATOR_PORT:-}" ] && (( attempt < 3 )); then
    echo "the emulator's port 127.0.0.1:$port was taken before it bound it; trying another port" >&2
    rm -f "$log"
    attempt=$((attempt + 1))
    continue
  fi
  case $started in
    1|3) echo "emulator failed to start; see $log" >&2 ;;
    *) echo "emulator did not answer on 127.0.0.1:$port; see $log" >&2 ;;
  esac
  cat "$log" >&2
  exit 1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=local
export AWS_SECRET_ACCESS_KEY=local
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_S3_FORCE_PATH_STYLE=true
echo "emulator: $AWS_ENDPOINT_URL (log: $log)" >&2

# The command runs in its own process group and this script waits for it, passing on a stop
# signal sent to the script alone (make's recipe shell, an IDE's stop button): bash runs a
# trap only once its foreground command has ended, so the signal would wait for the command,
# and the emulator with it. A terminal's Ctrl-C reaches the script and is passed on the same
# way. Its own group also keeps SIGINT at its default (bash ignores it in background jobs).
set -m
"$@" &
cmd=$!
set +m
forwarded=
# CONT: a command stopped for reading the terminal (its group is not the terminal's) would
# hold the signal pending for good.
forward() {
  forwarded=1
  kill -"$1" -- -"$cmd" 2>/dev/null || true
  kill -CONT -- -"$cmd" 2>/dev/null || true
}
trap 'forward INT' INT
trap 'forward TERM' TERM
trap 'forward HUP' HUP
# Ctrl-\ stops the command as a TERM does (a QUIT would leave core files of test binaries).
trap 'forward TERM' QUIT
while :; do
  forwarded=
  rc=0
  wait "$cmd" || rc=$?
  # A wait a forwarded signal cut short: the command is stopping; wait for its own status.
  [ -n "$forwarded" ] || break
done
exit "$rc"
