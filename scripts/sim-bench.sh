#!/usr/bin/env bash
# One load run of unhidra-sim against a fresh `unhidra serve` (release build, separate
# process, fresh data dir), the server sampled every second; see docs/benchmarks.md.
#
#   scripts/sim-bench.sh NAME ws|mqtt DEVICES INTERVAL DURATION RAMP_UP [PORT_BASE]
#   scripts/sim-bench.sh mqtt-10k mqtt 10000 10s 90s 20s 18640
#
# The server's config raises the per-address limits (every device comes from 127.0.0.1):
# registrations, WebSocket/MQTT connects per minute and the per-connection pacing. Ports:
# API PORT_BASE, metrics +1, MQTT +2. Output in target/sim-bench/NAME: samples.txt (time,
# VmRSS KiB, utime+stime ticks, active MQTT and WebSocket connections, points stored),
# report.json (the simulator's), metrics.txt (the server's at the end), and a summary.
set -euo pipefail
name=$1; transport=$2; devices=$3; interval=$4; duration=$5; ramp=$6; base=${7:-18610}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release}
dir=$root/target/sim-bench/$name
rm -rf "$dir"; mkdir -p "$dir"
api=$base; metrics=$((base + 1)); mqtt=$((base + 2))
cat > "$dir/sim.toml" <<TOML
listen = "127.0.0.1:$api"
metrics_listen = "127.0.0.1:$metrics"
data_dir = "$dir/data"
[rate_limits]
device_register_per_hour = 1000000
ws_connect_per_minute_per_ip = 1000000
ws_messages_per_second = 1000000
[connections]
# Every simulated device connects from this machine's one address.
max_per_ip = 1000000
[mqtt]
listen = "127.0.0.1:$mqtt"
TOML
pass="sim-bench-$(date +%s)-$RANDOM-correct-horse"
echo "$pass" | "$bin/unhidra" --config "$dir/sim.toml" admin create-user simuser > "$dir/create.log" 2>&1
"$bin/unhidra" --config "$dir/sim.toml" serve > "$dir/server.log" 2>&1 &
spid=$!
trap 'kill -TERM $spid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$api/readyz" > /dev/null && break; sleep 0.1; done
# One login before the "before" sample, as in the first WebSocket run (one Argon2 hash).
curl -fs -X POST "http://127.0.0.1:$api/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"simuser\",\"password\":\"$pass\"}" > /dev/null
sleep 1
sample() {
    local rss cpu m
    rss=$(awk '/VmRSS/{print $2}' "/proc/$spid/status")
    cpu=$(awk '{print $14 + $15}' "/proc/$spid/stat")
    m=$(curl -fs "http://127.0.0.1:$metrics/metrics" | awk '
        /^mqtt_connections_active /{mq=$2} /^gateway_connections_active /{ws=$2}
        /^telemetry_points_stored_total /{st=$2}
        END{printf "%s %s %s", (mq==""?0:mq), (ws==""?0:ws), (st==""?0:st)}')
    echo "$(date +%s.%N) $rss $cpu $m"
}
echo "# time rss_kib cpu_ticks(CLK_TCK=$(getconf CLK_TCK)) mqtt_active ws_active points_stored" > "$dir/samples.txt"
sample >> "$dir/samples.txt"
(while kill -0 $spid 2> /dev/null; do sleep 1; sample >> "$dir/samples.txt" 2> /dev/null || true; done) &
sampler=$!
args=(--url "http://127.0.0.1:$api" --register --devices "$devices" --username simuser
    --telemetry-interval "$interval" --duration "$duration" --ramp-up "$ramp" --seed 1)
if [ "$transport" = mqtt ]; then args+=(--transport mqtt --mqtt "127.0.0.1:$mqtt"); fi
{
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "unhidra-sim ${args[*]}"
    echo "sim start $(date +%s.%N)"
} > "$dir/meta.txt"
UNHIDRA_SIM_PASSWORD="$pass" "$bin/unhidra-sim" "${args[@]}" > "$dir/report.json" 2> "$dir/sim.err" &
simpid=$!
peak=0
while kill -0 $simpid 2> /dev/null; do
    r=$(awk '/VmRSS/{print $2}' "/proc/$simpid/status" 2> /dev/null || echo 0)
    [ "${r:-0}" -gt "$peak" ] && peak=$r
    sleep 2
done
wait $simpid
echo "sim end $(date +%s.%N) peak_rss_kib $peak" >> "$dir/meta.txt"
sleep 3
sample >> "$dir/samples.txt"
curl -fs "http://127.0.0.1:$metrics/metrics" > "$dir/metrics.txt" || true
kill $sampler 2> /dev/null || true
kill -TERM $spid; wait $spid || true
trap - EXIT
python3 - "$dir" <<'PY' | tee "$dir/summary.txt"
import json, sys
d = sys.argv[1]
rows = []
for line in open(f"{d}/samples.txt"):
    p = line.split()
    if line.startswith("#") or len(p) < 6:
        continue
    rows.append((float(p[0]), int(p[1]), int(p[2]), float(p[3]) + float(p[4]), float(p[5])))
rep = json.load(open(f"{d}/report.json"))
meta = open(f"{d}/meta.txt").read().split()
sim_end = float(meta[meta.index("end") + 1])
n = rep["devices"]
before = rows[0]
first = next(i for i, r in enumerate(rows) if r[3] > 0)
pre = rows[max(first - 1, 0)]
full = [r for r in rows if r[3] >= n and r[0] <= sim_end - 5]
print(f"{d}: {n} devices; {meta[meta.index('load'):meta.index('unhidra-sim')]}")
print(f"RSS before {before[1] / 1024:.1f} MiB, before the first connection {pre[1] / 1024:.1f} MiB")
if full:
    f0, f1 = full[0], full[-1]
    dt = f1[0] - f0[0]
    print(f"all connected {rows[first][0] - before[0]:.0f}..{f0[0] - before[0]:.0f} s; RSS then "
          f"{f0[1] / 1024:.1f} MiB, {dt:.0f} s later {f1[1] / 1024:.1f} MiB")
    print(f"per device: {(f1[1] - before[1]) / n:.2f} KiB over before, "
          f"{(f1[1] - pre[1]) / n:.2f} KiB over just before the first connection")
    if dt > 0:
        print(f"with all connected: {(f1[4] - f0[4]) / dt:.0f} points stored/s, "
              f"server CPU {(f1[2] - f0[2]) / 100 / dt:.2f} cores")
print(f"report: {json.dumps({k: rep[k] for k in ('welcomes', 'refused', 'disconnects', 'telemetry_sent', 'telemetry_acked', 'telemetry_dropped', 'server_errors', 'overloaded', 'connect_ms', 'connect_ms_max', 'all_welcomed_after_ms')})}")
print(f"points stored in all {max(r[4] for r in rows):.0f}; simulator peak RSS {int(meta[meta.index('peak_rss_kib') + 1]) / 1024:.0f} MiB")
PY
