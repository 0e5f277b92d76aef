#!/usr/bin/env bash
# Safe update of an installed charger-firmware (deploy/install.sh), run as root.
#
#   deploy/update.sh [--root DIR] (--wheel FILE | --source DIR) [--force] [--timeout S]
#                    [--health-timeout S] [--socket PATH] [--no-systemd]
#
#  1. builds the new release beside the current one (/opt/charger-firmware/releases/<version>, with
#     install.sh's builder; a release already built is reused; the version that is already current
#     is "nothing to do");
#  2. waits until no EVSE is charging: asks the running controller through its console socket
#     (`charger-console --socket PATH --json status`); an EVSE whose status is Charging or whose relay
#     is closed means wait. It asks every --poll S (default 5) for up to --timeout S (default 3600),
#     then gives up without touching anything. A controller that does not answer cannot say that
#     nobody is charging, so that is waited on too, except when systemd says the service is not
#     running (then its outputs are off). --force skips the wait;
#  3. switches `current` to the new release (atomically) and restarts the service
#     (`systemctl restart charger-firmware`);
#  4. checks its health for up to --health-timeout S (default 60): systemd shows it active/running
#     (with Type=notify that is after its READY=1: config loaded, outputs safe), and the console
#     answers `status`, with the backend online if it was online before the update;
#  5. when the health check fails: switches `current` back, restarts the old release, checks it, and
#     says so.
#
# For tests and for systems without systemd: --no-systemd (and --root, which implies it) does not run
# systemctl; --restart-cmd CMD restarts instead (without it: no restart, a message), --health-cmd CMD
# replaces the health check (healthy when CMD exits 0; retried until --health-timeout), --status-cmd
# CMD replaces the charger-console call (CMD prints the status JSON). The commands run with bash -c
# and get CHARGER_ROOT, CHARGER_RELEASE (the release's directory) and CHARGER_SOCKET in the environment.
# --socket PATH defaults to /run/charger-firmware/console.sock (under --root DIR: DIR/run/...).
# --python PY and --pip-arg ARG are as for install.sh.
#
# Exit status: 0 updated (or nothing to do), 1 not updated (still charging at --timeout, a build
# failed, or the new release failed its health check and the old one is back and healthy),
# 2 bad command line, 3 the new release failed and the old one is unhealthy too: look now
# (systemctl status charger-firmware; journalctl -u charger-firmware).
set -euo pipefail

# shellcheck source=deploy/install.sh
. "$(dirname "${BASH_SOURCE[0]}")/install.sh"
PROG=update.sh

# status_json: the controller's `status` document on stdout (fails when it does not answer).
status_json() {
    if [ -n "$STATUS_CMD" ]; then
        bash -c "$STATUS_CMD"
    else
        "$CURRENT_LINK/bin/charger-console" --socket "$SOCKET" --json status
    fi
}

# parse_status: reads a status document on stdin; prints the charging EVSEs and whether the backend is
# online ("charging=1 2" / "online=true"). Exit 0 when it parsed.
PARSE_STATUS='
import json, sys
doc = json.load(sys.stdin)
evses = doc.get("evses") or []
busy = [str(e.get("evse_id")) for e in evses if e.get("status") == "Charging" or e.get("relay_closed") is True]
print("charging=" + " ".join(busy))
print("online=" + ("true" if (doc.get("status") or {}).get("online") is True else "false"))
'
parse_status() {
    "$JSON_PYTHON" -c "$PARSE_STATUS"
}

# now_ms: a wall clock in milliseconds (bash 5's EPOCHREALTIME; whole seconds are too coarse for a deadline).
now_ms() {
    local us=${EPOCHREALTIME//[!0-9]/}
    printf '%s\n' "$((us / 1000))"
}

# to_ms S: seconds (as checked by `number`) in milliseconds.
to_ms() {
    local whole=${1%%.*} frac=""
    [[ "$1" == *.* ]] && frac=${1#*.}
    frac="${frac}000"
    printf '%s\n' "$((10#$whole * 1000 + 10#${frac:0:3}))"
}

service_state() {
    systemctl show -p ActiveState -p SubState --value "$APP_NAME.service" 2>/dev/null | paste -sd/ -
}

# wait_idle: returns when no EVSE is charging; exits 1 at --timeout.
wait_idle() {
    local deadline answer parsed charging last=""
    deadline=$(($(now_ms) + $(to_ms "$TIMEOUT_S")))
    while :; do
        if answer="$(status_json 2>"$ERR_FILE")" && parsed="$(printf '%s' "$answer" | parse_status 2>>"$ERR_FILE")"; then
            charging="$(printf '%s\n' "$parsed" | sed -n 's/^charging=//p')"
            [ "$(printf '%s\n' "$parsed" | sed -n 's/^online=//p')" = true ] && WAS_ONLINE=1
            if [ -z "$charging" ]; then
                say "no EVSE is charging"
                return 0
            fi
            last="EVSE $charging charging"
        elif [ "$USE_SYSTEMD" = 1 ] && ! systemctl is-active --quiet "$APP_NAME.service"; then
            say "$APP_NAME is not running (nothing is charging): updating"
            return 0
        else
            last="no status from the controller on $SOCKET: $(tail -n1 "$ERR_FILE")"
        fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            die "not updated: $last after ${TIMEOUT_S} s (release $NEW is built; run again later, or --force)"
        fi
        say "waiting: $last"
        sleep "$POLL_S"
    done
}

restart_service() {
    if [ -n "$RESTART_CMD" ]; then
        CHARGER_RELEASE="$RELEASES_DIR/$(current_release)" bash -c "$RESTART_CMD"
    elif [ "$USE_SYSTEMD" = 1 ]; then
        systemctl restart "$APP_NAME.service"
    else
        say "no restart command (--no-systemd without --restart-cmd): restart $APP_NAME yourself"
    fi
}

# health_once: 0 when healthy now; prints why not.
health_once() {
    local answer parsed state
    if [ -n "$HEALTH_CMD" ]; then
        CHARGER_RELEASE="$RELEASES_DIR/$(current_release)" bash -c "$HEALTH_CMD" 2>&1
        return
    fi
    if [ "$USE_SYSTEMD" = 1 ]; then
        state="$(service_state)"
        [ "$state" = active/running ] || { echo "systemd: $APP_NAME is $state (not active/running: no READY)"; return 1; }
    fi
    answer="$(status_json 2>"$ERR_FILE")" || { echo "the console does not answer status: $(tail -n1 "$ERR_FILE")"; return 1; }
    parsed="$(printf '%s' "$answer" | parse_status 2>"$ERR_FILE")" \
        || { echo "unreadable status: $(tail -n1 "$ERR_FILE")"; return 1; }
    if [ "$WAS_ONLINE" = 1 ] && ! printf '%s\n' "$parsed" | grep -qx 'online=true'; then
        echo "the backend is not online (it was before the update)"
        return 1
    fi
}

# healthy: retries health_once until it passes twice in a row, one --poll apart (a release that crashes
# right after its READY does not pass), or fails at --health-timeout; the last reason in HEALTH_WHY.
healthy() {
    local deadline passes=0
    deadline=$(($(now_ms) + $(to_ms "$HEALTH_TIMEOUT_S")))
    HEALTH_WHY=""
    while :; do
        if HEALTH_WHY="$(health_once)"; then
            passes=$((passes + 1))
            [ "$passes" -lt 2 ] || return 0
        else
            passes=0
            [ "$(now_ms)" -lt "$deadline" ] || return 1
        fi
        sleep "$POLL_S"
    done
}

number() {
    [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || usage_error "$1 needs a number of seconds, got '$2'"
}

update_main() {
    local root kind src force=0
    OPT_ROOT="" OPT_KIND="" OPT_SRC="" USE_SYSTEMD=1
    TIMEOUT_S=3600 HEALTH_TIMEOUT_S=60 POLL_S=5 SOCKET="" WAS_ONLINE=0
    RESTART_CMD="" HEALTH_CMD="" STATUS_CMD=""
    PIP_ARGS=()
    while [ $# -gt 0 ]; do
        if common_option "$@"; then shift "$OPT_SHIFT"; continue; fi
        case "$1" in
            --force) force=1 ;;
            --timeout) [ $# -ge 2 ] || usage_error "--timeout needs S"; number "$1" "$2"; TIMEOUT_S=$2; shift ;;
            --health-timeout) [ $# -ge 2 ] || usage_error "--health-timeout needs S"; number "$1" "$2"
                HEALTH_TIMEOUT_S=$2; shift ;;
            --poll) [ $# -ge 2 ] || usage_error "--poll needs S"; number "$1" "$2"; POLL_S=$2; shift ;;
            --socket) [ $# -ge 2 ] || usage_error "--socket needs PATH"; SOCKET=$2; shift ;;
            --restart-cmd) [ $# -ge 2 ] || usage_error "--restart-cmd needs CMD"; RESTART_CMD=$2; shift ;;
            --health-cmd) [ $# -ge 2 ] || usage_error "--health-cmd needs CMD"; HEALTH_CMD=$2; shift ;;
            --status-cmd) [ $# -ge 2 ] || usage_error "--status-cmd needs CMD"; STATUS_CMD=$2; shift ;;
            *) usage_error "unknown argument: $1" ;;
        esac
        shift
    done
    root=$OPT_ROOT kind=$OPT_KIND src=$OPT_SRC
    [ -n "$kind" ] || usage_error "give the new release: --wheel FILE or --source DIR"
    if [ -n "$root" ]; then
        [ -d "$root" ] || die "no such directory: $root"
        root="$(cd "$root" && pwd)"
        USE_SYSTEMD=0
    elif [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo $0 ...), or give --root DIR"
    fi
    set_paths "$root"
    [ -n "$SOCKET" ] || SOCKET="$ROOT/run/$APP_NAME/console.sock"
    export CHARGER_ROOT="$ROOT" CHARGER_SOCKET="$SOCKET"
    umask 022
    ERR_FILE="$(mktemp)"
    trap 'rm -f -- "$ERR_FILE"' EXIT

    OLD="$(current_release)"
    if [ -z "$OLD" ] || [ ! -f "$RELEASES_DIR/$OLD/.complete" ]; then
        die "no installed release at $CURRENT_LINK: install first with deploy/install.sh"
    fi
    mkdir -p "$APP_DIR"
    exec 9>"$APP_DIR/.update.lock"
    flock -n 9 || die "another update is running ($APP_DIR/.update.lock)"

    build_release "$kind" "$src"
    NEW=$RELEASE_VERSION
    if [ "$NEW" = "$OLD" ]; then
        say "release $NEW is already current: nothing to do"
        exit 0
    fi
    JSON_PYTHON="$RELEASES_DIR/$NEW/bin/python"

    if [ "$force" = 1 ]; then
        say "--force: not waiting for the charging sessions to end"
    else
        wait_idle
    fi

    switch_current "$NEW"
    restart_service || warn "the restart of release $NEW failed"
    if healthy; then
        say "updated: release $OLD -> $NEW, healthy"
        exit 0
    fi
    local why=$HEALTH_WHY
    warn "release $NEW failed its health check within ${HEALTH_TIMEOUT_S} s: $why"
    say "rolling back to release $OLD"
    switch_current "$OLD"
    restart_service || warn "the restart of release $OLD failed"
    if healthy; then
        printf '%s: error: update to %s failed its health check (%s); rolled back to %s, which is healthy\n' \
            "$PROG" "$NEW" "$why" "$OLD" >&2
        exit 1
    fi
    printf '%s: error: update to %s failed its health check (%s); rolled back to %s, which is NOT healthy either (%s): check systemctl status %s and journalctl -u %s\n' \
        "$PROG" "$NEW" "$why" "$OLD" "$HEALTH_WHY" "$APP_NAME" "$APP_NAME" >&2
    exit 3
}

update_main "$@"
