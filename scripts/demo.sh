#!/usr/bin/env bash
# `make demo`: emit the CPU demo repository, serve it with a real Triton, stream a completion,
# load-test it briefly, stop the server. Everything runs on this machine's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
TF=.venv/bin/tritonforge
OUT=${DEMO_OUT:-out/demo}
HTTP=${DEMO_HTTP_PORT:-8000}; GRPC=${DEMO_GRPC_PORT:-8001}; METRICS=${DEMO_METRICS_PORT:-8002}
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/5 embedded demo model (made offline once, then cached)"
$TF demo-model --name demo
$TF demo-model --name demo-draft >/dev/null

step "2/5 emit the Triton model repository from examples/cpu-demo.yaml"
$TF emit examples/cpu-demo.yaml -o "$OUT/repo" --force
$TF validate "$OUT/repo"

step "3/5 serve it with a real Triton server (CPU build from nvidia-pytriton)"
rm -f "$OUT/ready.json"
$TF serve "$OUT/repo" --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" \
    --ready-file "$OUT/ready.json" --log "$OUT/triton.log" &
SERVE_PID=$!
trap 'kill -TERM $SERVE_PID 2>/dev/null; wait $SERVE_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  [ -f "$OUT/ready.json" ] && break
  kill -0 $SERVE_PID 2>/dev/null || { echo "server failed to start; see $OUT/triton.log"; exit 1; }
  sleep 0.2
done
[ -f "$OUT/ready.json" ] || { echo "server not ready in time; see $OUT/triton.log"; exit 1; }

step "4/5 stream a completion through the ensemble (preprocessing -> tensorrt_llm -> postprocessing)"
# A 5M-parameter model trained for a few minutes on Python sources: expect Python-ish text, not sense.
$TF generate --url "http://127.0.0.1:$HTTP" --model ensemble --max-tokens 64 --temperature 0.7 --top-k 40 --seed 7 \
    "def parse_args(argv):"
$TF generate --url "http://127.0.0.1:$HTTP" --model ensemble --max-tokens 24 --no-stream "import os"

step "5/5 a short load test (Locust, 4 users, 15 s)"
$TF loadtest --url "http://127.0.0.1:$HTTP" --model ensemble --users 4 --duration 15s \
    --tokenizer "$($TF demo-model --name demo)" --metrics-url "http://127.0.0.1:$METRICS/metrics" \
    --repo "$OUT/repo" --output "$OUT/loadtest"

echo
echo "demo done: repository $OUT/repo, load-test report $OUT/loadtest/report.html"
