#!/usr/bin/env bash
# promobot.sh: tell promobot what a pipeline did, or ask it whether a deployment may go ahead.
#
#   report     POST $PROMOBOT_URL/api/v1/events                   (one pipeline event)
#   authorize  POST $PROMOBOT_URL/api/v1/deployments/authorize    (may this run deploy?)
#
# Needs only bash (3.2+), curl (7.55+, for `-H @file`) and coreutils. jq or python3 are used
# when present to check an embedded report/SBOM file and to read promobot's error answer;
# without them the script falls back to simpler checks.
#
# Inputs come from INPUT_<NAME> environment variables (the composite action.yml maps its
# inputs to these), or from the command line, which is how tests call it:
#
#   PROMOBOT_URL=http://127.0.0.1:8080 PROMOBOT_TOKEN=secret \
#     ./promobot.sh report --type artifact.built --service api-gateway --tag 7a3f9c2 \
#       --digest sha256:... --commit_sha 7a3f9c2... --pipeline_run_id 42 --built_at now
#
#   ./promobot.sh report --type verification.finished --service api-gateway --tag 7a3f9c2 \
#       --environment staging --result passed --check smoke=passed --check e2e=passed
#
#   GITHUB_RUN_ID=42 GITHUB_RUN_ATTEMPT=1 GITHUB_REPOSITORY=org/app \
#     ./promobot.sh authorize --service api-gateway --environment production \
#       --image_digest sha256:... --promotion_id prm-123
#
# `--name value` and `--name=value` set INPUT_NAME ('-' becomes '_'); `--check n=r` may repeat.
#
# Exit status: 0 done; 1 promobot refused (any 4xx, or authorized=false); 2 bad input or
# configuration (nothing was sent); 3 gave up: promobot unreachable or 5xx/429 on every try.
#
# The token is read from PROMOBOT_TOKEN (or PROMOBOT_API_TOKEN). It is written only to a
# mode-600 header file that curl reads (-H @file), so it never appears in argv, in the log,
# or in `set -x` output (the script never enables xtrace).

set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: keep '&' literal in ${s//x/y}

readonly MAX_BODY_BYTES=$((10 * 1024 * 1024)) # promobot's MAX_EVENT_BYTES

EXIT_REFUSED=1
EXIT_USAGE=2
EXIT_GAVE_UP=3

# ---------------------------------------------------------------------------------------------
# Small helpers

# GitHub workflow commands end at a newline; escape the data part as actions/toolkit does.
gh_escape() {
  local s=$1
  s=${s//%/%25}
  s=${s//$'\r'/%0D}
  s=${s//$'\n'/%0A}
  printf '%s' "$s"
}

in_actions() { [ "${GITHUB_ACTIONS:-}" = "true" ]; }

log() { printf 'promobot: %s\n' "$*" >&2; }

annotate() { # level message
  if in_actions; then
    printf '::%s title=promobot::%s\n' "$1" "$(gh_escape "$2")"
  else
    printf 'promobot: %s: %s\n' "$1" "$2" >&2
  fi
}

die() { # exit-code message
  annotate error "$2"
  exit "$1"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

# json_escape STRING: the JSON string body for STRING (no surrounding quotes). Handles
# backslash, double quote and every C0 control character; bytes >= 0x20 pass through
# (UTF-8 text stays UTF-8; JSON allows it raw). Bash strings cannot hold NUL.
json_escape() {
  local s=$1 i ch esc
  # shellcheck disable=SC1003 # these are the literal two-character JSON escapes
  local bs='\\' qt='\"' nl='\n' cr='\r' tb='\t' bk='\b' ff='\f'
  s=${s//\\/"$bs"}
  s=${s//\"/"$qt"}
  s=${s//$'\n'/"$nl"}
  s=${s//$'\r'/"$cr"}
  s=${s//$'\t'/"$tb"}
  s=${s//$'\b'/"$bk"}
  s=${s//$'\f'/"$ff"}
  for i in 1 2 3 4 5 6 7 11 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31; do
    # shellcheck disable=SC2059 # the format *is* the octal escape that makes the byte
    printf -v ch "\\$(printf '%03o' "$i")"
    case $s in
      *"$ch"*)
        printf -v esc '\\u%04x' "$i"
        s=${s//"$ch"/"$esc"}
        ;;
    esac
  done
  printf '%s' "$s"
}

# The JSON body is built as a list of members: ,"key":value
MEMBERS=""
add_str() { # key value: add "key":"value" when value is not empty
  [ -n "$2" ] || return 0
  MEMBERS="$MEMBERS,\"$1\":\"$(json_escape "$2")\""
}
add_raw() { # key json: add "key":json (json already valid)
  MEMBERS="$MEMBERS,\"$1\":$2"
}

input() { # NAME: value of INPUT_NAME, or empty
  local var="INPUT_$1"
  printf '%s' "${!var:-}"
}

now_utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# "now" is resolved here, once, so that every retry sends the same bytes and the recorded time
# is the pipeline's, not whenever a retry reached promobot.
resolve_now() {
  case $1 in
    [Nn][Oo][Ww]) now_utc ;;
    *) printf '%s' "$1" ;;
  esac
}

gen_uuid() {
  if [ -r /proc/sys/kernel/random/uuid ]; then
    cat /proc/sys/kernel/random/uuid
  elif command -v uuidgen >/dev/null 2>&1; then
    uuidgen | LC_ALL=C tr '[:upper:]' '[:lower:]'
  else
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
  fi
}

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# json_string_field FILE KEY: a top-level field of a JSON object as text ("" if absent).
json_string_field() {
  local file=$1 key=$2
  [ -s "$file" ] || return 0
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$key" 'if type == "object" and has($k) and .[$k] != null
      then (.[$k] | if type == "string" then . else tojson end) else empty end' \
      "$file" 2>/dev/null && return 0
  fi
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$file" "$key" <<'PY' 2>/dev/null && return 0
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
v = d.get(sys.argv[2]) if isinstance(d, dict) else None
if v is not None:
    print(v if isinstance(v, str) else json.dumps(v))
PY
  fi
  # Last resort without a parser: "key": "simple string" or "key": true/false/number.
  local flat
  flat=$(tr -d '\r\n' <"$file")
  printf '%s' "$flat" | grep -o "\"$key\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" | head -n 1 |
    sed 's/^[^:]*:[[:space:]]*"//; s/"$//' | grep . && return 0
  printf '%s' "$flat" | grep -o "\"$key\"[[:space:]]*:[[:space:]]*[-0-9a-z.]*" | head -n 1 |
    sed 's/^[^:]*:[[:space:]]*//' | grep -v '^null$' || true
}

# json_list_field FILE KEY: one line per item of a top-level list of strings.
json_list_field() {
  local file=$1 key=$2
  [ -s "$file" ] || return 0
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$key" 'if type == "object" and (.[$k] | type) == "array"
      then .[$k][] | (if type == "string" then . else tojson end) else empty end' \
      "$file" 2>/dev/null && return 0
  fi
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$file" "$key" <<'PY' 2>/dev/null || true
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
v = d.get(sys.argv[2]) if isinstance(d, dict) else None
for item in v if isinstance(v, list) else []:
    print(item if isinstance(item, str) else json.dumps(item))
PY
    return 0
  fi
  # Last resort without a parser: a flat list of simple strings.
  tr -d '\r\n' <"$file" | grep -o "\"$key\"[[:space:]]*:[[:space:]]*\[[^]]*\]" | head -n 1 |
    sed 's/^[^[]*\[//; s/\]$//' | grep -o '"[^"]*"' | sed 's/^"//; s/"$//' || true
}

# check_json_object_file FILE SKIP: is FILE (after SKIP leading bytes) a JSON object?
check_json_object_file() {
  local file=$1 skip=$2
  if command -v jq >/dev/null 2>&1; then
    tail -c "+$((skip + 1))" "$file" | jq -e 'type == "object"' >/dev/null 2>&1
    return
  fi
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1],encoding="utf-8-sig")); sys.exit(0 if isinstance(d,dict) else 1)' \
      "$file" 2>/dev/null
    return
  fi
  # No parser: at least the first non-blank byte must open an object.
  local first
  first=$(tail -c "+$((skip + 1))" "$file" | tr -d ' \t\r\n' | head -c 1)
  [ "$first" = "{" ]
}

set_output() { # name value (multi-line safe)
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    local delim
    delim="promobot_$(gen_uuid | tr -d '-')"
    {
      printf '%s<<%s\n' "$1" "$delim"
      printf '%s\n' "$2"
      printf '%s\n' "$delim"
    } >>"$GITHUB_OUTPUT"
  fi
}

# ---------------------------------------------------------------------------------------------
# Command line -> INPUT_* variables

if [ $# -gt 0 ]; then
  case $1 in
    report | authorize)
      # shellcheck disable=SC2034 # read indirectly through input COMMAND
      INPUT_COMMAND=$1
      shift
      ;;
    -h | --help | help)
      usage
      exit 0
      ;;
  esac
fi
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --*=*)
      opt=${1%%=*}
      val=${1#*=}
      shift
      ;;
    --*)
      [ $# -ge 2 ] || die $EXIT_USAGE "option $1 needs a value"
      opt=$1
      val=$2
      shift 2
      ;;
    *) die $EXIT_USAGE "unexpected argument: $1 (try --help)" ;;
  esac
  name=$(printf '%s' "${opt#--}" | LC_ALL=C tr 'abcdefghijklmnopqrstuvwxyz-' 'ABCDEFGHIJKLMNOPQRSTUVWXYZ_')
  case $name in
    '' | *[!A-Z0-9_]*) die $EXIT_USAGE "bad option name: $opt" ;;
  esac
  if [ "$name" = CHECK ]; then # repeatable: --check smoke=passed
    INPUT_CHECKS="${INPUT_CHECKS:-}${INPUT_CHECKS:+$'\n'}$val"
    continue
  fi
  printf -v "INPUT_$name" '%s' "$val"
done

COMMAND=$(input COMMAND)
case $COMMAND in
  report | authorize) ;;
  '') die $EXIT_USAGE "no command: give 'report' or 'authorize' (input command)" ;;
  *) die $EXIT_USAGE "unknown command '$COMMAND': expected 'report' or 'authorize'" ;;
esac

BASE_URL=${PROMOBOT_URL:-}
BASE_URL=${BASE_URL%/}
case $BASE_URL in
  https://?*) ;;
  http://localhost* | http://127.0.0.1* | http://\[::1\]*) ;;
  http://?*) annotate warning "PROMOBOT_URL uses plain http: the API token crosses the network unencrypted" ;;
  '') die $EXIT_USAGE "PROMOBOT_URL is not set (input promobot_url)" ;;
  *) die $EXIT_USAGE "PROMOBOT_URL must start with https:// (got '$BASE_URL')" ;;
esac

TOKEN=${PROMOBOT_TOKEN:-${PROMOBOT_API_TOKEN:-}}
[ -n "$TOKEN" ] || die $EXIT_USAGE "PROMOBOT_TOKEN is not set (input promobot_token)"
case $TOKEN in
  *[$'\r\n']*) die $EXIT_USAGE "PROMOBOT_TOKEN contains a line break" ;;
esac

RETRIES=$(input RETRIES)
RETRIES=${RETRIES:-4}
is_uint "$RETRIES" || die $EXIT_USAGE "retries must be a whole number (got '$RETRIES')"
BASE_DELAY=${PROMOBOT_RETRY_BASE_DELAY:-2} # seconds; tests set 0
is_uint "$BASE_DELAY" || die $EXIT_USAGE "PROMOBOT_RETRY_BASE_DELAY must be a whole number"
MAX_DELAY=30
CONNECT_TIMEOUT=${PROMOBOT_CONNECT_TIMEOUT:-10}
MAX_TIME=${PROMOBOT_MAX_TIME:-120}

umask 077
TMP=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/promobot.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
BODY=$TMP/body.json
RESP=$TMP/response.json
HDRS=$TMP/response.headers
CURL_ERR=$TMP/curl.err
AUTH_HEADER=$TMP/auth.header
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$AUTH_HEADER" # printf is a builtin: not in argv
unset TOKEN

RUN_URL=""
if [ -n "${GITHUB_SERVER_URL:-}" ] && [ -n "${GITHUB_REPOSITORY:-}" ] && [ -n "${GITHUB_RUN_ID:-}" ]; then
  RUN_URL="$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID"
fi

# ---------------------------------------------------------------------------------------------
# Build the request body (once: every retry sends exactly these bytes)

build_report() {
  local type service tag
  type=$(input TYPE)
  service=$(input SERVICE)
  tag=$(input TAG)
  [ -n "$type" ] || die $EXIT_USAGE "report needs a type (artifact.built, deployment.finished, verification.finished, scan.finished, sbom.published)"
  [ -n "$service" ] || die $EXIT_USAGE "report needs a service"
  [ -n "$tag" ] || die $EXIT_USAGE "report needs a tag"

  EVENT_ID=$(input EVENT_ID)
  if [ -z "$EVENT_ID" ]; then
    # Generated once per step invocation; the same id goes out on every retry, so a resend
    # after a lost answer is a harmless duplicate. run_attempt is part of it: a re-run of the
    # job is a new report, possibly with different content, and must not collide (409).
    EVENT_ID="gha-${GITHUB_RUN_ID:-local}-${GITHUB_RUN_ATTEMPT:-0}-${GITHUB_JOB:-job}-$(gen_uuid)"
    EVENT_ID=$(printf '%s' "$EVENT_ID" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-200)
  fi

  local status result environment run_id url digest commit_sha pipeline_run_id built_at
  local finished_at scanner format checks file promotion_id image_digest
  promotion_id=$(input PROMOTION_ID)
  image_digest=$(input IMAGE_DIGEST)
  status=$(input STATUS)
  result=$(input RESULT)
  environment=$(input ENVIRONMENT)
  run_id=$(input RUN_ID)
  url=$(input URL)
  digest=$(input DIGEST)
  commit_sha=$(input COMMIT_SHA)
  pipeline_run_id=$(input PIPELINE_RUN_ID)
  built_at=$(input BUILT_AT)
  finished_at=$(input FINISHED_AT)
  scanner=$(input SCANNER)
  format=$(input FORMAT)
  checks=$(input CHECKS)
  file=$(input FILE)
  [ -n "$file" ] || file=$(input REPORT_FILE)
  [ -n "$file" ] || file=$(input SBOM_FILE)

  MEMBERS=""
  add_str type "$type"
  add_str event_id "$EVENT_ID"
  add_str service "$service"
  add_str tag "$tag"

  # promobot refuses unknown fields (extra="forbid"), so each type gets only its own fields.
  local used="" file_field=""
  case $type in
    artifact.built)
      add_str digest "$digest"
      add_str commit_sha "${commit_sha:-${GITHUB_SHA:-}}"
      add_str pipeline_run_id "${pipeline_run_id:-${GITHUB_RUN_ID:-}}"
      add_str built_at "$(resolve_now "${built_at:-now}")"
      used="digest commit_sha pipeline_run_id built_at"
      ;;
    deployment.finished)
      add_str environment "$environment"
      add_str status "${status:-$result}"
      add_str run_id "${run_id:-${GITHUB_RUN_ID:-}}"
      add_str url "${url:-$RUN_URL}"
      add_str finished_at "$(resolve_now "$finished_at")"
      # the promotion and digest promobot dispatched: promobot links the report to that promotion only
      add_str promotion_id "$promotion_id"
      add_str digest "${digest:-$image_digest}"
      used="environment status result run_id url finished_at promotion_id digest image_digest"
      ;;
    verification.finished)
      add_str environment "$environment"
      add_str result "${result:-$status}"
      add_str url "${url:-$RUN_URL}"
      add_str finished_at "$(resolve_now "$finished_at")"
      add_str promotion_id "$promotion_id"
      add_str digest "${digest:-$image_digest}"
      used="environment status result url finished_at checks promotion_id digest image_digest"
      ;;
    scan.finished)
      add_str scanner "$scanner"
      add_str digest "$digest"
      file_field=report
      used="scanner digest file"
      ;;
    sbom.published)
      add_str format "$format"
      add_str digest "$digest"
      file_field=sbom
      used="format digest file"
      ;;
    *)
      annotate warning "unknown event type '$type': sending every field that was given"
      add_str environment "$environment"
      add_str status "$status"
      add_str result "$result"
      add_str run_id "$run_id"
      add_str url "$url"
      add_str digest "$digest"
      add_str commit_sha "$commit_sha"
      add_str pipeline_run_id "$pipeline_run_id"
      add_str built_at "$(resolve_now "$built_at")"
      add_str finished_at "$(resolve_now "$finished_at")"
      add_str scanner "$scanner"
      add_str format "$format"
      used="environment status result run_id url digest commit_sha pipeline_run_id built_at finished_at scanner format checks"
      ;;
  esac

  # Inputs given that this event type has no field for: say so rather than send a 400.
  local n v
  for n in environment status result run_id url digest commit_sha pipeline_run_id built_at \
    finished_at scanner format checks file promotion_id image_digest; do
    case " $used " in *" $n "*) continue ;; esac
    v=$(input "$(printf '%s' "$n" | LC_ALL=C tr '[:lower:]' '[:upper:]')")
    [ "$n" = file ] && v=$file
    [ -z "$v" ] || annotate warning "input '$n' is not a field of $type events; it was not sent"
  done

  if [ -n "$checks" ] && case " $used " in *" checks "*) true ;; *) false ;; esac; then
    local obj="" line key val
    while IFS= read -r line || [ -n "$line" ]; do
      line=${line%$'\r'}
      case $line in '' | \#*) continue ;; esac
      case $line in *=*) ;; *) die $EXIT_USAGE "checks: '$line' is not name=result" ;; esac
      key=${line%%=*}
      val=${line#*=}
      # trim blanks around the name and the result
      key=$(printf '%s' "$key" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
      val=$(printf '%s' "$val" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
      [ -n "$key" ] || die $EXIT_USAGE "checks: '$line' has no name"
      obj="$obj,\"$(json_escape "$key")\":\"$(json_escape "$val")\""
    done <<<"$checks"
    add_raw checks "{${obj#,}}"
  fi

  if [ -n "$file_field" ]; then
    [ -n "$file" ] || die $EXIT_USAGE "$type needs a file (the ${file_field} as JSON): input file"
    if [ ! -f "$file" ] || [ ! -r "$file" ]; then
      die $EXIT_USAGE "cannot read $file_field file: $file"
    fi
    local size skip=0
    size=$(wc -c <"$file" | tr -d ' ')
    [ "$size" -gt 0 ] || die $EXIT_USAGE "$file_field file is empty: $file"
    [ "$size" -le "$MAX_BODY_BYTES" ] ||
      die $EXIT_USAGE "$file_field file is $size bytes; promobot accepts at most $MAX_BODY_BYTES per event. Send a filtered report (e.g. trivy --severity HIGH,CRITICAL) or a smaller SBOM."
    # A UTF-8 byte order mark would sit in the middle of our body and break it: skip it.
    if [ "$(head -c 3 "$file" | od -An -tx1 | tr -d ' \n')" = "efbbbf" ]; then skip=3; fi
    check_json_object_file "$file" "$skip" ||
      die $EXIT_USAGE "$file_field file is not a JSON object: $file"
    # Head, then the file's own bytes, then the tail: the file is never read into a variable.
    {
      printf '{%s,"%s":' "${MEMBERS#,}" "$file_field"
      tail -c "+$((skip + 1))" "$file"
      printf '}'
    } >"$BODY"
  else
    printf '{%s}' "${MEMBERS#,}" >"$BODY"
  fi
  SUMMARY="$type service=$service tag=$tag${environment:+ environment=$environment} event_id=$EVENT_ID"
  ENDPOINT=/api/v1/events
}

build_authorize() {
  local service environment image_digest image_tag promotion_id run_id run_attempt repository
  service=$(input SERVICE)
  image_tag=$(input IMAGE_TAG)
  [ -n "$image_tag" ] || image_tag=$(input TAG)
  environment=$(input ENVIRONMENT)
  image_digest=$(input IMAGE_DIGEST)
  [ -n "$image_digest" ] || image_digest=$(input DIGEST)
  promotion_id=$(input PROMOTION_ID)
  run_id=${GITHUB_RUN_ID:-}
  run_attempt=${GITHUB_RUN_ATTEMPT:-}
  repository=${GITHUB_REPOSITORY:-}
  [ -n "$service" ] || die $EXIT_USAGE "authorize needs a service"
  [ -n "$environment" ] || die $EXIT_USAGE "authorize needs an environment"
  [ -n "$image_digest" ] || die $EXIT_USAGE "authorize needs an image_digest"
  [ -n "$promotion_id" ] || die $EXIT_USAGE "authorize needs a promotion_id"
  is_uint "$run_id" || die $EXIT_USAGE "authorize needs GITHUB_RUN_ID (a number; got '$run_id')"
  is_uint "$run_attempt" || die $EXIT_USAGE "authorize needs GITHUB_RUN_ATTEMPT (a number; got '$run_attempt')"
  [ -n "$repository" ] || die $EXIT_USAGE "authorize needs GITHUB_REPOSITORY (owner/repo)"

  EVENT_ID=""
  MEMBERS=""
  add_str service "$service"
  add_str environment "$environment"
  add_str image_digest "$image_digest"
  add_str promotion_id "$promotion_id"
  add_raw run_id "$((10#$run_id))"
  add_raw run_attempt "$((10#$run_attempt))"
  add_str repository "$repository"
  add_str image_tag "$image_tag"
  printf '{%s}' "${MEMBERS#,}" >"$BODY"
  SUMMARY="authorize service=$service environment=$environment promotion_id=$promotion_id run=$run_id/$run_attempt"
  ENDPOINT=/api/v1/deployments/authorize
}

case $COMMAND in
  report) build_report ;;
  authorize) build_authorize ;;
esac

BODY_SIZE=$(wc -c <"$BODY" | tr -d ' ')
[ "$BODY_SIZE" -le "$MAX_BODY_BYTES" ] ||
  die $EXIT_USAGE "event is $BODY_SIZE bytes; promobot accepts at most $MAX_BODY_BYTES"
[ -z "$EVENT_ID" ] || set_output event_id "$EVENT_ID"

# ---------------------------------------------------------------------------------------------
# Send, with retries on connection errors, 5xx and 429, never on other 4xx

retry_after() { # seconds from a Retry-After header, or empty
  tr -d '\r' <"$HDRS" | awk 'tolower($1) == "retry-after:" { v = $2 } END { print v }'
}

report_refusal() { # http-status
  local code=$1 error reason problem hint rule
  error=$(json_string_field "$RESP" error)
  reason=$(json_string_field "$RESP" reason)
  hint=$(json_string_field "$RESP" hint)
  rule=$(json_string_field "$RESP" rule)
  if [ -z "$error" ] && [ -z "$reason" ]; then
    error="HTTP $code: $(head -c 500 "$RESP" | tr '\r\n' '  ')"
  fi
  case $error in *"$reason"*) reason="" ;; esac # promobot's message already names it
  annotate error "promobot refused ($code${rule:+, $rule}): ${error}${reason:+: $reason}${hint:+ ($hint)}"
  while IFS= read -r problem; do
    [ -z "$problem" ] || annotate error "  $problem"
  done < <(json_list_field "$RESP" problems)
}

URL="$BASE_URL$ENDPOINT"
ATTEMPTS=$((RETRIES + 1))
log "$SUMMARY -> $URL ($BODY_SIZE bytes)"

attempt=1
while :; do
  : >"$RESP"
  : >"$HDRS"
  set +e
  code=$(curl -sS -X POST \
    --connect-timeout "$CONNECT_TIMEOUT" --max-time "$MAX_TIME" \
    -H 'Content-Type: application/json' -H 'Accept: application/json' \
    -H 'User-Agent: promobot-action/1' -H "@$AUTH_HEADER" \
    --data-binary "@$BODY" -o "$RESP" -D "$HDRS" -w '%{http_code}' \
    -- "$URL" 2>"$CURL_ERR")
  rc=$?
  set -e
  retry=no
  if [ "$rc" -ne 0 ]; then
    problem="cannot reach promobot (curl exit $rc: $(head -n 1 "$CURL_ERR"))"
    case $rc in
      5 | 6 | 7 | 16 | 18 | 28 | 35 | 52 | 55 | 56 | 92) retry=yes ;; # resolve/connect/timeout/reset
      *) ;;                                                        # bad URL, TLS trust, ...: no
    esac
  else
    case $code in
      2??)
        set_output http_status "$code"
        set_output response "$(cat "$RESP")"
        if [ "$COMMAND" = authorize ]; then
          if [ "$(json_string_field "$RESP" authorized)" = "false" ]; then
            set_output authorized false
            report_refusal "$code"
            exit $EXIT_REFUSED
          fi
          set_output authorized true
        fi
        log "promobot answered $code: $(head -c 1000 "$RESP" | tr '\r\n' '  ')"
        exit 0
        ;;
      429 | 5??)
        problem="promobot answered $code: $(head -c 300 "$RESP" | tr '\r\n' '  ')"
        retry=yes
        ;;
      *)
        set_output http_status "$code"
        set_output response "$(cat "$RESP")"
        [ "$COMMAND" != authorize ] || set_output authorized false
        report_refusal "$code"
        exit $EXIT_REFUSED
        ;;
    esac
  fi

  if [ "$retry" != yes ] || [ "$attempt" -ge "$ATTEMPTS" ]; then
    [ "$rc" -ne 0 ] || set_output http_status "$code"
    [ "$COMMAND" != authorize ] || set_output authorized false
    [ "$retry" != yes ] || problem="$problem; gave up after $attempt attempts"
    die $EXIT_GAVE_UP "$problem"
  fi
  delay=$((BASE_DELAY << (attempt - 1)))
  [ "$delay" -le "$MAX_DELAY" ] || delay=$MAX_DELAY
  ra=$(retry_after)
  if is_uint "$ra" && [ "$ra" -gt "$delay" ]; then
    delay=$ra
    [ "$delay" -le 60 ] || delay=60
  fi
  jitter=0
  [ "$BASE_DELAY" -eq 0 ] || jitter=$((RANDOM % 1000))
  log "attempt $attempt of $ATTEMPTS failed ($problem); retrying in ${delay}.$(printf '%03d' "$jitter")s with the same body${EVENT_ID:+ and event_id}"
  sleep "${delay}.$(printf '%03d' "$jitter")"
  attempt=$((attempt + 1))
done
