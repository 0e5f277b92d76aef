#!/usr/bin/env bash
# Install charger-firmware on a Raspberry Pi (Raspberry Pi OS Bookworm), run as root. Idempotent.
#
#   deploy/install.sh [--root DIR] [--wheel FILE | --source DIR] [--no-systemd]
#   deploy/install.sh [--root DIR] --uninstall [--purge] [--no-systemd]
#
# What it does (each step is skipped when already done):
#   - the system user `charger-firmware` (no login, no home), in the groups gpio, spi, dialout and input
#     (those that exist) and in `charger`, the group whose members may use the console socket;
#   - /var/lib/charger-firmware (0750, the user's), /etc/charger-firmware (0750 root:charger-firmware) with
#     config.toml (0640) copied from deploy/charger.example.toml only when there is none;
#   - a venv /opt/charger-firmware/releases/<version> with the wheel (or the source tree) pip-installed
#     into it, then /opt/charger-firmware/current -> releases/<version> (a relative symlink, swapped
#     atomically: a temporary link renamed over it). A release that is already built is reused;
#   - /usr/local/bin/charger-console -> /opt/charger-firmware/current/bin/charger-console;
#   - /etc/systemd/system/charger-firmware.service from deploy/, `systemctl daemon-reload` and `enable`
#     (it does not start it: edit the config first, then `systemctl enable --now charger-firmware`).
# With neither --wheel nor --source it installs the source tree this script belongs to (deploy/..).
#
# --uninstall stops and disables the service, removes the unit, the releases, `current` and the
# charger-console link; the state
# (/var/lib/charger-firmware) and the config stay unless --purge, which also removes the user.
#
# --root DIR prefixes every path, for tests and for preparing an image: nothing outside DIR is
# touched. Under --root (and with --no-systemd) systemctl is not run; under --root the user and the
# groups are not created and nothing is chown'ed (useradd/usermod would change the host's
# /etc/passwd): the script prints what it would run instead ("would run: ...").
#
# Other options: --unit FILE (the unit to install; default deploy/charger-firmware.service),
# --python PY (the interpreter of the venv; default python3), --pip-arg ARG (repeatable; passed to
# `pip install`, e.g. --pip-arg --no-deps for an offline test, or --pip-arg --index-url=...).
#
# Exit status: 0 done, 1 failed (the message says what), 2 bad command line.
#
# update.sh sources this file for its release builder: when sourced it only defines the functions.
set -euo pipefail

APP_NAME=charger-firmware
SERVICE_USER=charger-firmware
CONSOLE_GROUP=charger
DEVICE_GROUPS=(gpio spi dialout input)
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf '%s: %s\n' "${PROG:-install.sh}" "$*"; }
warn() { printf '%s: warning: %s\n' "${PROG:-install.sh}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${PROG:-install.sh}" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s (see --help)\n' "${PROG:-install.sh}" "$*" >&2; exit 2; }

# set_paths ROOT: every path the scripts use, under ROOT ("" for the real system).
set_paths() {
    ROOT="${1%/}"
    APP_DIR="$ROOT/opt/$APP_NAME"
    RELEASES_DIR="$APP_DIR/releases"
    CURRENT_LINK="$APP_DIR/current"
    STATE_DIR="$ROOT/var/lib/$APP_NAME"
    CONFIG_DIR="$ROOT/etc/$APP_NAME"
    CONFIG_FILE="$CONFIG_DIR/config.toml"
    UNIT_FILE="$ROOT/etc/systemd/system/$APP_NAME.service"
    CONSOLE_LINK="$ROOT/usr/local/bin/charger-console"
}

# run_or_say CMD...: run CMD, or under --root / --no-systemd only print it.
run_systemctl() {
    if [ -n "$ROOT" ] || [ "${USE_SYSTEMD:-1}" = 0 ]; then
        say "would run: systemctl $*"
    else
        systemctl "$@"
    fi
}

# --- the release builder (used by update.sh too) ------------------------------------------------

# release_version KIND SRC: the version of a wheel (from its file name, PEP 427) or a source tree
# (setup.cfg [metadata] version, else firmware/__init__.py's __version__).
release_version() {
    local kind=$1 src=$2 version=""
    if [ "$kind" = wheel ]; then
        local base
        base="$(basename "$src")"
        case "$base" in
            charger_firmware-*.whl) version="$(printf '%s' "$base" | cut -d- -f2)" ;;
            *) die "$src is not a charger-firmware wheel (expected charger_firmware-<version>-...whl)" ;;
        esac
    else
        if [ -f "$src/setup.cfg" ]; then
            version="$(sed -n 's/^version[[:space:]]*=[[:space:]]*\([^[:space:]]*\).*/\1/p' "$src/setup.cfg" | head -n1)"
        fi
        if [ -z "$version" ] && [ -f "$src/firmware/__init__.py" ]; then
            version="$(sed -n 's/^__version__[[:space:]]*=[[:space:]]*["'\'']\([^"'\'']*\)["'\''].*/\1/p' \
                "$src/firmware/__init__.py" | head -n1)"
        fi
    fi
    [[ "$version" =~ ^[A-Za-z0-9][A-Za-z0-9._+!-]*$ ]] || die "cannot tell the version of $src (got '$version')"
    printf '%s\n' "$version"
}

# build_release KIND SRC: the venv releases/<version> with SRC pip-installed; reused when already built
# (its .complete marker). Sets RELEASE_VERSION and RELEASE_DIR.
build_release() {
    local kind=$1 src=$2
    case "$kind" in
        wheel) [ -f "$src" ] || die "no such wheel: $src" ;;
        source) [ -f "$src/setup.cfg" ] || die "$src is not the charger-firmware source tree (no setup.cfg)" ;;
        *) die "build_release: unknown kind $kind" ;;
    esac
    RELEASE_VERSION="$(release_version "$kind" "$src")"
    RELEASE_DIR="$RELEASES_DIR/$RELEASE_VERSION"
    if [ -f "$RELEASE_DIR/.complete" ]; then
        say "release $RELEASE_VERSION is already built: $RELEASE_DIR"
        return 0
    fi
    if [ -e "$RELEASE_DIR" ]; then
        [ "$(current_release)" != "$RELEASE_VERSION" ] || die "$RELEASE_DIR is current but incomplete; reinstall by hand"
        say "removing the incomplete release $RELEASE_DIR (an interrupted build)"
        rm -rf -- "${RELEASES_DIR:?}/${RELEASE_VERSION:?}"
    fi
    mkdir -p "$RELEASES_DIR"
    local python=${PYTHON:-python3}
    command -v "$python" >/dev/null 2>&1 || die "$python not found (apt-get install python3-venv, or --python PY)"
    say "building release $RELEASE_VERSION in $RELEASE_DIR"
    "$python" -m venv "$RELEASE_DIR" || die "cannot create the venv $RELEASE_DIR (apt-get install python3-venv)"
    local target=$src
    [ "$kind" = source ] && target="$(cd "$src" && pwd)"
    "$RELEASE_DIR/bin/python" -I -m pip install --disable-pip-version-check --no-input --quiet \
        ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "$target" \
        || die "pip install of $src into $RELEASE_DIR failed (above); the release is left incomplete"
    local installed
    installed="$("$RELEASE_DIR/bin/python" -I -c 'import firmware; print(firmware.__version__)')" \
        || die "the release $RELEASE_DIR cannot import firmware"
    [ "$installed" = "$RELEASE_VERSION" ] \
        || die "$src installed firmware $installed, not $RELEASE_VERSION as its name says"
    printf '%s\n' "$src" >"$RELEASE_DIR/.complete"
    say "release $RELEASE_VERSION built"
}

# current_release: the version `current` points at ("" when none).
current_release() {
    local target
    target="$(readlink "$CURRENT_LINK" 2>/dev/null)" || return 0
    basename "$target"
}

# switch_current VERSION: point `current` at releases/VERSION, atomically (rename(2) of a new link).
switch_current() {
    local version=$1 tmp
    [ -f "$RELEASES_DIR/$version/.complete" ] || die "release $version is not built ($RELEASES_DIR/$version)"
    tmp="$APP_DIR/.current.$$"
    ln -sfn "releases/$version" "$tmp"
    mv -T -f "$tmp" "$CURRENT_LINK"
    say "current -> releases/$version"
}

# --- install ----------------------------------------------------------------------------------

ensure_user() {
    local groups=("$CONSOLE_GROUP") group
    for group in "${DEVICE_GROUPS[@]}"; do
        if [ -n "$ROOT" ] || getent group "$group" >/dev/null; then
            groups+=("$group")
        else
            warn "group $group does not exist here (not Raspberry Pi OS?); $SERVICE_USER is not added to it"
        fi
    done
    local joined
    joined="$(IFS=,; printf '%s' "${groups[*]}")"
    if [ -n "$ROOT" ]; then
        say "--root: users and groups are not created; would run:"
        say "  groupadd --system $CONSOLE_GROUP"
        say "  useradd --system --user-group --no-create-home --home-dir /var/lib/$APP_NAME --shell /usr/sbin/nologin $SERVICE_USER"
        say "  usermod --append --groups $joined $SERVICE_USER"
        return 0
    fi
    getent group "$CONSOLE_GROUP" >/dev/null || { groupadd --system "$CONSOLE_GROUP"; say "created group $CONSOLE_GROUP"; }
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --no-create-home --home-dir "/var/lib/$APP_NAME" \
            --shell /usr/sbin/nologin "$SERVICE_USER"
        say "created user $SERVICE_USER"
    fi
    usermod --append --groups "$joined" "$SERVICE_USER"
}

# own OWNER:GROUP PATH: chown, except under --root (the user does not exist there).
own() {
    [ -n "$ROOT" ] || chown "$1" "$2"
}

ensure_dirs() {
    install -d -m 0750 "$STATE_DIR"
    own "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
    install -d -m 0750 "$CONFIG_DIR"
    own "root:$SERVICE_USER" "$CONFIG_DIR"
    if [ -e "$CONFIG_FILE" ]; then
        say "keeping the existing config $CONFIG_FILE"
    else
        [ -f "$DEPLOY_DIR/charger.example.toml" ] || die "missing $DEPLOY_DIR/charger.example.toml"
        install -m 0640 "$DEPLOY_DIR/charger.example.toml" "$CONFIG_FILE"
        own "root:$SERVICE_USER" "$CONFIG_FILE"
        say "installed the example config $CONFIG_FILE: edit it (start from deploy/reference-board.toml)"
    fi
    install -d -m 0755 "$APP_DIR" "$RELEASES_DIR"
}

service_active() {
    [ -z "$ROOT" ] && [ "${USE_SYSTEMD:-1}" = 1 ] && systemctl is-active --quiet "$APP_NAME.service"
}

install_release() {
    local kind=$1 src=$2 before
    build_release "$kind" "$src"
    before="$(current_release)"
    if [ "$before" = "$RELEASE_VERSION" ]; then
        say "current is already release $RELEASE_VERSION"
    elif [ -n "$before" ] && service_active; then
        die "$APP_NAME is running release $before: update it with deploy/update.sh (it waits until no EV is charging)"
    else
        switch_current "$RELEASE_VERSION"
    fi
}

install_unit() {
    local unit=$1
    [ -f "$unit" ] || die "missing the unit file $unit (--unit FILE)"
    install -d -m 0755 "$(dirname "$UNIT_FILE")"
    if [ -f "$UNIT_FILE" ] && cmp -s "$unit" "$UNIT_FILE"; then
        say "unit $UNIT_FILE is up to date"
    else
        install -m 0644 "$unit" "$UNIT_FILE"
        say "installed $UNIT_FILE"
    fi
    run_systemctl daemon-reload
    run_systemctl enable "$APP_NAME.service"
}

# charger-console on PATH: /usr/local/bin/charger-console -> the current release's.
link_console() {
    install -d -m 0755 "$(dirname "$CONSOLE_LINK")"
    ln -sfn "/opt/$APP_NAME/current/bin/charger-console" "$CONSOLE_LINK"
}

do_install() {
    local kind=$1 src=$2 unit=$3
    ensure_user
    ensure_dirs
    install_release "$kind" "$src"
    link_console
    install_unit "$unit"
    say "installed release $(current_release). Next: edit $CONFIG_FILE, check it with"
    say "  $APP_DIR/current/bin/charger-firmware --check-config /etc/$APP_NAME/config.toml"
    say "then: systemctl enable --now $APP_NAME; systemctl status $APP_NAME; charger-console status"
}

do_uninstall() {
    local purge=$1
    if [ -f "$UNIT_FILE" ]; then
        if [ -n "$ROOT" ] || [ "${USE_SYSTEMD:-1}" = 0 ]; then
            run_systemctl disable --now "$APP_NAME.service"
        else
            systemctl disable --now "$APP_NAME.service" || warn "systemctl disable --now failed (above)"
        fi
        rm -f -- "$UNIT_FILE"
        run_systemctl daemon-reload
        say "removed $UNIT_FILE"
    fi
    rm -rf -- "${APP_DIR:?}"
    if [ -L "$CONSOLE_LINK" ]; then rm -f -- "$CONSOLE_LINK"; fi
    say "removed $APP_DIR"
    if [ "$purge" = 1 ]; then
        rm -rf -- "${STATE_DIR:?}" "${CONFIG_DIR:?}"
        say "purged $STATE_DIR and $CONFIG_DIR"
        if [ -n "$ROOT" ]; then
            say "--root: would run: userdel $SERVICE_USER; groupdel $CONSOLE_GROUP"
        else
            if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; say "removed user $SERVICE_USER"; fi
            if getent group "$CONSOLE_GROUP" >/dev/null; then groupdel "$CONSOLE_GROUP" || warn "group $CONSOLE_GROUP kept"; fi
        fi
    else
        say "kept the state $STATE_DIR and the config $CONFIG_DIR (--purge removes them)"
    fi
}

# The options install.sh and update.sh share: `common_option "$@"` takes the first argument (and its
# value) when it is one of them, sets OPT_ROOT / OPT_KIND / OPT_SRC / USE_SYSTEMD / PYTHON / PIP_ARGS and
# OPT_SHIFT (how many arguments it took); it returns 1 for any other argument.
common_option() {
    case "$1" in
        --root) [ $# -ge 2 ] || usage_error "--root needs DIR"; OPT_ROOT=$2; OPT_SHIFT=2 ;;
        --wheel|--source)
            [ $# -ge 2 ] || usage_error "$1 needs $([ "$1" = --wheel ] && echo FILE || echo DIR)"
            [ -z "$OPT_KIND" ] || usage_error "--wheel or --source, once"
            OPT_KIND=${1#--}; OPT_SRC=$2; OPT_SHIFT=2 ;;
        --no-systemd) USE_SYSTEMD=0; OPT_SHIFT=1 ;;
        --python) [ $# -ge 2 ] || usage_error "--python needs PY"; PYTHON=$2; OPT_SHIFT=2 ;;
        --pip-arg) [ $# -ge 2 ] || usage_error "--pip-arg needs ARG"; PIP_ARGS+=("$2"); OPT_SHIFT=2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) return 1 ;;
    esac
}

install_main() {
    PROG=install.sh
    local root kind src uninstall=0 purge=0 unit="$DEPLOY_DIR/$APP_NAME.service"
    OPT_ROOT="" OPT_KIND="" OPT_SRC="" USE_SYSTEMD=1
    PIP_ARGS=()
    while [ $# -gt 0 ]; do
        if common_option "$@"; then shift "$OPT_SHIFT"; continue; fi
        case "$1" in
            --uninstall) uninstall=1 ;;
            --purge) purge=1 ;;
            --unit) [ $# -ge 2 ] || usage_error "--unit needs FILE"; unit=$2; shift ;;
            *) usage_error "unknown argument: $1" ;;
        esac
        shift
    done
    root=$OPT_ROOT kind=$OPT_KIND src=$OPT_SRC
    [ "$purge" = 0 ] || [ "$uninstall" = 1 ] || usage_error "--purge goes with --uninstall"
    [ "$uninstall" = 0 ] || [ -z "$kind" ] || usage_error "--uninstall takes no --wheel/--source"
    if [ -n "$root" ]; then
        mkdir -p "$root"
        root="$(cd "$root" && pwd)"
    elif [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo $0 ...), or give --root DIR"
    fi
    set_paths "$root"
    umask 022
    if [ "$uninstall" = 1 ]; then
        do_uninstall "$purge"
    else
        if [ -z "$kind" ]; then kind=source; src="$(dirname "$DEPLOY_DIR")"; fi
        do_install "$kind" "$src" "$unit"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    install_main "$@"
fi
