# Shared by the benchmark scripts (tools/bench/run, tools/bench/watch):
# sourced after ROOT, BUILD, WORK, BROKERS and PIDS are set.
CLK=$(getconf CLK_TCK)
now() { date +%s.%N; }
cpu_of() { awk -v clk="$CLK" '{ printf "%.3f", ($14 + $15) / clk }' "/proc/$1/stat"; }
rss_of() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }  # peak, MiB
rss_now() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; } # current, MiB

# start_kpid NAME CATALOG_LINE [KAFKA_PROPERTIES_LINE] [EXTRA_YAML]: kpid on
# the ${PREFIX}campaign/product/crm topics (or KAFKA_INPUT_FILE's sources), group bench-NAME, state in
# $WORK/state-NAME; sets KPID_PID, METRICS and GRPC (host:port).
start_kpid() {
  local name=$1 catalog_line=$2 props=${3:-} extra=${4:-}
  # KAFKA_INPUT_FILE set: its kafka.sources block (as kpigen --print-source
  # prints it) instead of the family topics.
  local input="  topics: {campaign: ${PREFIX}campaign, product: ${PREFIX}product, crm: ${PREFIX}crm}"
  [ -n "${KAFKA_INPUT_FILE:-}" ] && input=$(cat "$KAFKA_INPUT_FILE")
  cat >"$WORK/kpid-$name.yaml" <<CFG
kafka:
  brokers: $BROKERS
  group_id: bench-$name
  dlq_topic: ${PREFIX}dlq
$input
  $props
$catalog_line
$extra
CFG
  rm -f "$WORK/info-$name"
  "$BUILD/services/kpid" --config "$WORK/kpid-$name.yaml" --state-dir "$WORK/state-$name" --grpc-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --listen-info "$WORK/info-$name" >>"$WORK/kpid-$name.log" 2>&1 &
  KPID_PID=$!
  PIDS+=("$KPID_PID")
  while [ ! -f "$WORK/info-$name" ]; do
    if ! kill -0 "$KPID_PID" 2>/dev/null; then
      tail -5 "$WORK/kpid-$name.log" >&2
      exit 1
    fi
    sleep 0.01
  done
  METRICS=$(sed -n 's/^metrics=//p' "$WORK/info-$name")
  GRPC=$(sed -n 's/^grpc=//p' "$WORK/info-$name")
}
caught_up() {
  curl -s "http://$METRICS/metrics" | awk -v want="$1" '
    /^kpistream_consumer_lag_records\{/ { n++; lag += $NF }
    /^kpistream_records_applied_total / { applied = $NF }
    END { exit !(n == 12 && lag == 0 && applied + 0 >= want) }'
}
