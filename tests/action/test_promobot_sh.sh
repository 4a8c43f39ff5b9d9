#!/usr/bin/env bash
# Tests for promobot.sh against a local stub (tests/stub_server.py). Needs bash, curl, python3.
#   bash tests/action/test_promobot_sh.sh               # tests/test_action.py runs it both ways
#   NO_PARSERS=1 bash tests/action/test_promobot_sh.sh  # the same, with no jq/python3 for the script
# Every case runs the script as a plain command, the way the composite action runs it,
# with INPUT_* variables or command-line options, and PROMOBOT_RETRY_BASE_DELAY=0.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/../../.github/actions/promobot/promobot.sh
TOKEN="tok-$RANDOM-s3cr3t-never-printed"
PASS=0
FAIL=0
WORK=$(mktemp -d)
trap 'kill "$STUB_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

python3 "$HERE/stub_server.py" "$WORK" &
STUB_PID=$!
for _ in $(seq 50); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT=$(cat "$WORK/port")
BASE="http://127.0.0.1:$PORT"

# NO_PARSERS=1: run the script with neither jq nor python3 on its PATH (the fallbacks).
SCRIPT_PATH=$PATH
if [ "${NO_PARSERS:-0}" = 1 ]; then
  mkdir -p "$WORK/bin"
  for d in /usr/local/bin /usr/bin /bin; do
    for f in "$d"/*; do
      case ${f##*/} in jq | python3* | python) continue ;; esac
      [ -e "$WORK/bin/${f##*/}" ] || ln -s "$f" "$WORK/bin/${f##*/}"
    done
  done
  SCRIPT_PATH=$WORK/bin
  echo "(running promobot.sh without jq and python3)"
fi

ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$1"; }
bad() { FAIL=$((FAIL + 1)); printf 'FAIL %s\n' "$1"; [ -z "${2:-}" ] || printf '     %s\n' "$2"; }
check() { # name condition-command...
  local name=$1
  shift
  if "$@"; then ok "$name"; else bad "$name" "$*"; fi
}

plan() { printf '%s\n' "$@" >"$WORK/plan"; : >"$WORK/requests.jsonl"; }
nreq() { wc -l <"$WORK/requests.jsonl" | tr -d ' '; }
# req N EXPR: evaluate a Python expression over request N (1-based); b = parsed body, r = record
req() {
  python3 - "$WORK/requests.jsonl" "$1" "$2" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
r = recs[int(sys.argv[2]) - 1]
b = json.loads(r["body"])
v = eval(sys.argv[3])
sys.exit(0 if v is True else 1)
PY
}

run() { # env... -- args...: runs the script; RC, and $WORK/out, err, gh_output
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  : >"$WORK/gh_output"
  env -i PATH="$SCRIPT_PATH" HOME="$HOME" PROMOBOT_URL="$BASE" PROMOBOT_TOKEN="$TOKEN" \
    PROMOBOT_RETRY_BASE_DELAY=0 GITHUB_OUTPUT="$WORK/gh_output" "${envs[@]}" \
    bash "$SCRIPT" "$@" >"$WORK/out" 2>"$WORK/err"
  RC=$?
}
no_token_leak() {
  ! grep -q "$TOKEN" "$WORK/out" "$WORK/err" "$WORK/gh_output"
}

GH=(GITHUB_ACTIONS=true GITHUB_RUN_ID=4242 GITHUB_RUN_ATTEMPT=2 GITHUB_JOB=build
  GITHUB_REPOSITORY=octo-org/api GITHUB_SHA=0123456789abcdef0123456789abcdef01234567
  GITHUB_SERVER_URL=https://github.com)
DIGEST=sha256:$(printf 'a%.0s' $(seq 64))

# --- 1. artifact.built from INPUT_* variables, with the GitHub defaults --------------------
plan '202 {"status":"accepted","result":"recorded","type":"artifact.built"}'
run "${GH[@]}" INPUT_COMMAND=report INPUT_TYPE=artifact.built INPUT_SERVICE=api-gateway \
  INPUT_TAG=7a3f9c2 INPUT_DIGEST="$DIGEST" --
check "artifact.built: exit 0" [ "$RC" -eq 0 ]
check "artifact.built: one request to /api/v1/events" req 1 'r["path"] == "/api/v1/events"'
check "artifact.built: bearer token sent" req 1 "r['headers']['authorization'] == 'Bearer $TOKEN'"
check "artifact.built: exactly the type's fields" req 1 \
  'sorted(b) == ["built_at","commit_sha","digest","event_id","pipeline_run_id","service","tag","type"]'
check "artifact.built: defaults from GITHUB_*" req 1 \
  'b["commit_sha"] == "0123456789abcdef0123456789abcdef01234567" and b["pipeline_run_id"] == "4242"'
check "artifact.built: built_at resolved locally, not 'now'" req 1 \
  '__import__("re").match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", b["built_at"]) is not None'
check "artifact.built: event_id carries run, attempt, job" req 1 'b["event_id"].startswith("gha-4242-2-build-")'
check "artifact.built: event_id output" grep -q '^event_id<<' "$WORK/gh_output"
check "artifact.built: token never printed" no_token_leak

# --- 2. retries on 503 keep the same body and event_id ------------------------------------
plan '503 {"error":"db down"}' '503 {"error":"db down"}' '202 {"status":"accepted","result":"duplicate"}'
run "${GH[@]}" -- report --type deployment.finished --service api-gateway --tag 7a3f9c2 \
  --environment staging --status success
check "503 twice: exit 0 on the third try" [ "$RC" -eq 0 ]
check "503 twice: three requests" [ "$(nreq)" = 3 ]
check "503 twice: identical bodies" python3 -c '
import json,sys; rs=[json.loads(l)["body"] for l in open(sys.argv[1])]; sys.exit(0 if len(set(rs))==1 else 1)' \
  "$WORK/requests.jsonl"
check "deployment.finished: run_id and url default to this run" req 1 \
  'b["run_id"] == "4242" and b["url"] == "https://github.com/octo-org/api/actions/runs/4242"'

# --- 2b. a dispatched run's reports carry its promotion id and digest -----------------------
plan '202 {"status":"accepted","result":"recorded"}'
run "${GH[@]}" INPUT_PROMOTION_ID=prm-0123456789 INPUT_IMAGE_DIGEST="$DIGEST" -- report --type deployment.finished \
  --service api-gateway --tag 7a3f9c2 --environment production --status success
check "deployment.finished: promotion_id and digest (from image_digest) sent" req 1 \
  'b["promotion_id"] == "prm-0123456789" and b["digest"] == "'"$DIGEST"'"'
plan '202 {"status":"accepted","result":"recorded"}'
run "${GH[@]}" INPUT_PROMOTION_ID=prm-0123456789 -- report --type artifact.built --service api --tag t1 --digest "$DIGEST"
check "artifact.built: promotion_id is not its field, not sent" req 1 '"promotion_id" not in b'

# --- 3. 429 with Retry-After is retried ----------------------------------------------------
plan '429 0 {"error":"slow down"}' '202 {"status":"accepted"}'
run -- report --type verification.finished --service api-gateway --tag 7a3f9c2 --environment staging \
  --result passed --check smoke=passed --check 'e2e = failed ' --url https://ci.example/run/1
check "429: retried, exit 0" [ "$RC" -eq 0 ] && [ "$(nreq)" = 2 ]
check "verification.finished: checks object" req 1 'b["checks"] == {"smoke": "passed", "e2e": "failed"}'
check "local run: event_id without GitHub context" req 1 'b["event_id"].startswith("gha-local-0-job-")'

# --- 4. a 400 is not retried; error and problems become ::error:: annotations -------------
plan '400 {"error":"invalid event","problems":["digest: not an image digest","built_at: needs a time zone"]}'
run "${GH[@]}" INPUT_COMMAND=report INPUT_TYPE=artifact.built INPUT_SERVICE=api INPUT_TAG=t1 INPUT_DIGEST=bad --
check "400: exit 1" [ "$RC" -eq 1 ]
check "400: not retried" [ "$(nreq)" = 1 ]
check "400: ::error:: with promobot's error" grep -q '^::error title=promobot::promobot refused (400): invalid event' "$WORK/out"
check "400: each problem annotated" grep -q '^::error title=promobot::  digest: not an image digest' "$WORK/out"

# --- 5. 409 conflict is a refusal, not retried ---------------------------------------------
plan '409 {"error":"tag api:t1 already has digest sha256:bbb; tag mutation refused","rule":"tag mutation"}'
run -- report --type artifact.built --service api --tag t1 --digest "$DIGEST" --commit_sha abcdef1 --pipeline_run_id 9
check "409: exit 1, one request" [ "$RC" -eq 1 ] && [ "$(nreq)" = 1 ]
check "409: message shown" grep -q 'tag mutation refused' "$WORK/err"

# --- 6. promobot unreachable: retried, then exit 3 -----------------------------------------
run PROMOBOT_URL=http://127.0.0.1:9 -- report --retries 2 --type artifact.built --service api --tag t1 \
  --digest "$DIGEST" --commit_sha abcdef1 --pipeline_run_id 9
check "unreachable: exit 3" [ "$RC" -eq 3 ]
check "unreachable: three attempts logged" [ "$(grep -c 'retrying in' "$WORK/err")" = 2 ]
check "unreachable: token never printed" no_token_leak

# --- 7. scan.finished embeds the report file (BOM skipped, bytes untouched) ----------------
printf '\xef\xbb\xbf{"Results":[{"Target":"app \\"x\\"","Vulnerabilities":[{"VulnerabilityID":"CVE-1","Title":"caf\xc3\xa9\\n\\u0001"}]}]}\n' \
  >"$WORK/trivy.json"
plan '202 {"status":"accepted"}'
run -- report --type scan.finished --service api --tag t1 --scanner trivy --file "$WORK/trivy.json"
check "scan.finished: exit 0" [ "$RC" -eq 0 ]
check "scan.finished: report embedded as JSON" python3 -c '
import json,sys
r=json.loads(open(sys.argv[1]).readline())
b=json.loads(r["body"]); f=json.load(open(sys.argv[2],encoding="utf-8-sig"))
sys.exit(0 if b["report"]==f and b["scanner"]=="trivy" and "digest" not in b else 1)' \
  "$WORK/requests.jsonl" "$WORK/trivy.json"

printf '[1,2,3]' >"$WORK/notobj.json"
plan '202 {}'
run -- report --type sbom.published --service api --tag t1 --format cyclonedx --file "$WORK/notobj.json"
check "sbom.published: a non-object file is refused locally (exit 2, nothing sent)" \
  [ "$RC" -eq 2 ] && [ "$(nreq)" = 0 ]

# --- 8. strings are JSON-escaped -----------------------------------------------------------
plan '202 {}'
weird=$'svc "q" \\ back\ttab\nnew\x01ctl é'
run INPUT_COMMAND=report INPUT_TYPE=deployment.finished INPUT_SERVICE="$weird" INPUT_TAG=t1 \
  INPUT_ENVIRONMENT=dev INPUT_STATUS=failure --
check "escaping: body parses and round-trips" python3 -c '
import json,sys
b=json.loads(json.loads(open(sys.argv[1]).readline())["body"])
sys.exit(0 if b["service"]==sys.argv[2] else 1)' "$WORK/requests.jsonl" "$weird"

# --- 9. inputs that are not fields of the type are dropped with a warning -----------------
plan '202 {}'
run GITHUB_ACTIONS=true -- report --type artifact.built --service api --tag t1 --digest "$DIGEST" \
  --commit_sha abcdef1 --pipeline_run_id 9 --environment prod
check "extra input: warning" grep -q "^::warning title=promobot::input 'environment' is not a field" "$WORK/out"
check "extra input: not sent" req 1 '"environment" not in b'

# --- 10. authorize ---------------------------------------------------------------------------
plan '200 {"authorized":true,"promotion_id":"prm-1"}'
run "${GH[@]}" -- authorize --service api --environment production --image_digest "$DIGEST" --promotion_id prm-1
check "authorize: exit 0" [ "$RC" -eq 0 ]
check "authorize: endpoint and body" req 1 \
  'r["path"] == "/api/v1/deployments/authorize" and b == {"service":"api","environment":"production","image_digest":"'"$DIGEST"'","promotion_id":"prm-1","run_id":4242,"run_attempt":2,"repository":"octo-org/api"}'
check "authorize: authorized=true output" grep -q '^true$' <(sed -n '/^authorized<</,+1p' "$WORK/gh_output")

plan '403 {"error":"not authorized","reason":"run 4242 is not the dispatch promobot made for prm-1"}'
run "${GH[@]}" -- authorize --service api --environment production --image_digest "$DIGEST" --promotion_id prm-1
check "authorize refused: exit 1, not retried" [ "$RC" -eq 1 ] && [ "$(nreq)" = 1 ]
check "authorize refused: error and reason annotated" \
  grep -q '^::error title=promobot::promobot refused (403): not authorized: run 4242 is not the dispatch' "$WORK/out"
check "authorize refused: authorized=false output" grep -q '^false$' <(sed -n '/^authorized<</,+1p' "$WORK/gh_output")

plan '200 {"authorized":false,"error":"not authorized","reason":"environment is locked"}'
run "${GH[@]}" -- authorize --service api --environment production --image_digest "$DIGEST" --promotion_id prm-1
check "authorize 200 with authorized=false: exit 1" [ "$RC" -eq 1 ]

plan '200 {}'
run -- authorize --service api --environment production --image_digest "$DIGEST" --promotion_id prm-1
check "authorize outside Actions without GITHUB_RUN_ID: exit 2, nothing sent" [ "$RC" -eq 2 ] && [ "$(nreq)" = 0 ]

# --- 11. configuration errors ----------------------------------------------------------------
run PROMOBOT_URL= -- report --type artifact.built --service a --tag t
check "no PROMOBOT_URL: exit 2" [ "$RC" -eq 2 ]
run PROMOBOT_TOKEN= -- report --type artifact.built --service a --tag t
check "no token: exit 2" [ "$RC" -eq 2 ]
run -- deploy --service a
check "unknown command: exit 2" [ "$RC" -eq 2 ]
run -- report --type verification.finished --service a --tag t --environment dev --result passed --check nonsense
check "check without '=': exit 2" [ "$RC" -eq 2 ]

printf '\n%d passed, %d failed\n' "$PASS" "$FAIL"
[ "$FAIL" -eq 0 ]
