#!/usr/bin/env bash
# Gateway benchmark: builds the gateway and the bench tools, starts the
# gateway on temporary configs (loopback ports chosen free at run time) and
# runs the scenarios, then prints one table of figures against the targets.
#
#   bench/bench.sh                      # every scenario, full size (~6-10 min)
#   bench/bench.sh -quick               # smaller counts, shorter runs (~3 min)
#   bench/bench.sh intake latency       # some scenarios only
#   bench/bench.sh -keep profile        # CPU/alloc profiles; keep them on disk
#
# Scenarios: intake (with the per-message-fsync baseline), latency, drain
# (also start-up with the backlog, memory and disk), drain-mqtt (to a
# mosquitto started late), drain-jetstream (to a local 3-node JetStream
# cluster, R=3), devices (memory per device), subscriber (durable subscriber
# replay and latency), profile, soak (make soak; SOAK=10m, SOAK_RATE,
# SOAK_OUT=dist/soak); aliases: all, baseline, memory, startup, disk,
# mqtt, jetstream, durable. Options: -quick, -keep (keep the scratch directory: logs,
# queue files, profiles), -json FILE (rows as JSON). Environment:
# BENCH_QUICK=1 is -quick, BENCH_WORK=DIR picks the scratch directory,
# BENCH_VALUES / BENCH_RETAIN=false change the sink's values/retain.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:+-quick}
keep=
json=
scenarios=()
while [ $# -gt 0 ]; do
	case "$1" in
	-quick | --quick) quick=-quick ;;
	-keep | --keep) keep=1 ;;
	-json | --json) json=$2; shift ;;
	-h | --help) sed -n '2,20p' "$0"; exit 0 ;;
	-*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
	*) scenarios+=("$1") ;;
	esac
	shift
done

work=${BENCH_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/wittra-bench.XXXXXX")}
mkdir -p "$work"
cleanup() {
	if [ -n "$keep" ]; then
		echo "bench.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

export PATH="$PATH:/usr/sbin"
GO=${GO:-go}
bin="$work/bin"
mkdir -p "$bin"
echo "bench.sh: building into $bin" >&2
# The gateway exactly as `make build` builds it.
CGO_ENABLED=0 $GO build -trimpath -ldflags "-s -w -X main.Version=bench" -o "$bin/wittra-gateway" ./cmd/gateway
$GO build -o "$bin/" ./cmd/wittra-load ./bench/baseline ./bench/noop ./bench/profile ./bench/fill ./bench/qstat ./bench/natscluster ./bench/runner

args=(-bin "$bin" -work "$work" -values="${BENCH_VALUES:-true}" -retain="${BENCH_RETAIN:-true}")
[ -n "$quick" ] && args+=(-quick)
# The soak scenario (make soak): its duration, rate and output directory.
[ -n "${SOAK:-}" ] && args+=(-soak "$SOAK")
[ -n "${SOAK_RATE:-}" ] && args+=(-soak-rate "$SOAK_RATE")
[ -n "${SOAK_OUT:-}" ] && args+=(-soak-out "$SOAK_OUT")
[ -n "$json" ] && args+=(-json "$json")
"$bin/runner" "${args[@]}" ${scenarios[@]+"${scenarios[@]}"}
