#!/usr/bin/env bash
# Builds the kho-agent and kho-hub Debian packages (cargo-deb), installs them with dpkg, runs the
# INSTALLED binaries with the INSTALLED configs as the user `kho` the packages create, checks that the
# agent syncs a local SQLite source into the installed hub (hub status API) and that every file they
# write belongs to kho; then stops the hub so changes wait in the outbox, upgrades both packages to a
# rebuilt .deb (higher revision), checks that the edited configs and the outbox survived and drain,
# and finally removes (dpkg -r) and purges the packages. Department IT's steps use the commands of
# docs/vi/cai-dat-agent.md verbatim (see `guide` below), so the guide cannot silently rot.
#
# Needs root. It CHANGES THE SYSTEM: installs the packages, creates the user kho, /etc/kho-agent,
# /etc/kho-hub, /var/lib/kho-agent, /var/lib/kho-hub and /srv/kho-deb-test, and purges/removes them
# at the end. Called by .ci/run after the main tests. No systemd as PID 1 is needed (CI has none):
# the services are started the way their units start them, as kho.
#
#   KHO_DEB_PROFILE   cargo profile to package (default: dev, which reuses the test build; the
#                     release packages are `cargo deb -p kho-agent` / `cargo deb -p kho-hub`)
#   KHO_DEB_PORT      the hub's port for the test (default 18443)
#   KHO_DEB_KEEP=1    keep the work directory (logs, .debs)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${KHO_DEB_PROFILE:-dev}
PORT=${KHO_DEB_PORT:-18443}
AGENT_ID=deb-test-01
SRC_DIR=/srv/kho-deb-test
SRC_DB=$SRC_DIR/ho_so.sqlite
WORK=$(mktemp -d /tmp/kho-deb.XXXXXX)
HUB_PID=
AGENT_PID=
OK=

step() { echo "== deb-install: $*"; }
fail() {
  echo "deb-install FAILED: $*" >&2
  for f in "$WORK"/*.log; do
    [ -e "$f" ] || continue
    echo "---- $f (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
  exit 1
}
# Run as kho. An array, not a function: `"${AS_KHO[@]}" cmd &` makes $! the process itself.
AS_KHO=(setpriv --reuid=kho --regid=kho --init-groups --)
stop_pid() { # pid: SIGTERM, wait up to 30 s
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.5; done
  echo "process $pid did not stop within 30 s of SIGTERM" >&2
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}
# Department IT's steps are run as the Vietnamese guide writes them: `guide '<command>'` fails when
# docs/vi/cai-dat-agent.md no longer contains the command verbatim, then runs it. `sudo` (not
# installed in CI) is this function: `sudo -u kho cmd` runs cmd as kho, `sudo cmd` as root.
GUIDE=$PWD/docs/vi/cai-dat-agent.md
sudo() {
  if [ "${1:-}" = -u ]; then local user=$2; shift 2; setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"; else "$@"; fi
}
guide() { # command [log]
  grep -qF -- "$1" "$GUIDE" || fail "$GUIDE no longer contains the command: $1"
  echo "   guide: $1"
  eval "$1" >>"$WORK/${2:-guide}.log" 2>&1 || fail "the guide's command failed: $1 (log: ${2:-guide}.log)"
}
purge_all() {
  dpkg -P kho-agent kho-hub >/dev/null 2>&1 || true
  rm -rf /etc/kho-agent /etc/kho-hub /var/lib/kho-agent /var/lib/kho-hub "$SRC_DIR"
}
cleanup() {
  local rc=$?
  stop_pid "$AGENT_PID" || true
  stop_pid "$HUB_PID" || true
  if [ -z "$OK" ]; then purge_all; fi
  if [ -n "${KHO_DEB_KEEP:-}" ] || [ "$rc" -ne 0 ]; then echo "deb-install: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || fail "must run as root (dpkg -i, a system user)"
for tool in cargo dpkg setpriv sqlite3 curl jq sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is required (cargo install cargo-deb --locked)"

# A leftover of an interrupted run of this script is cleaned; anything else is refused.
if dpkg-query -W kho-agent >/dev/null 2>&1 || dpkg-query -W kho-hub >/dev/null 2>&1 \
  || [ -e /var/lib/kho-agent ] || [ -e /var/lib/kho-hub ]; then
  if grep -qs "id = \"$AGENT_ID\"" /etc/kho-agent/agent.toml || [ -e "$SRC_DIR" ]; then
    step "cleaning up a previous interrupted run"
    purge_all
  else
    fail "kho-agent/kho-hub is installed or /var/lib/kho-* exists on this machine; this test installs and purges them — run it on a throwaway machine"
  fi
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then fail "port $PORT is in use (set KHO_DEB_PORT)"; fi

# ── the compose file (deploy/compose/) ────────────────────────────────────────
compose=
if docker compose version >/dev/null 2>&1; then compose="docker compose"
elif command -v docker-compose >/dev/null; then compose=docker-compose
fi
if [ -n "$compose" ]; then
  step "validating deploy/compose/docker-compose.yml with $compose config"
  KHO_PG_PASSWORD=validate $compose -f deploy/compose/docker-compose.yml config -q || fail "$compose config"
elif [ -n "${KHO_REQUIRE_COMPOSE:-}" ]; then
  fail "no Docker Compose on this machine, and KHO_REQUIRE_COMPOSE is set"
else
  step "SKIPPED: docker-compose.yml not validated (no Docker Compose on this machine)"
fi

# ── build ────────────────────────────────────────────────────────────────────
build_debs() { # out-dir revision (packages the binaries built below)
  mkdir -p "$1"
  for pkg in kho-hub kho-agent; do
    cargo deb -p "$pkg" --no-build --profile "$PROFILE" --deb-revision "$2" --fast -o "$1/" >"$WORK/deb-$pkg-$2.log" 2>&1 \
      || fail "cargo deb -p $pkg (revision $2)"
  done
  ls "$1"/kho-agent_*.deb "$1"/kho-hub_*.deb >/dev/null || fail "no .deb in $1"
}
step "building the binaries and the packages (profile $PROFILE)"
# One cargo invocation for both binaries (shared features, one build), then cargo-deb packages them.
cargo build --profile "$PROFILE" -p kho-agent -p kho-hub --bins >"$WORK/build.log" 2>&1 || fail "cargo build"
build_debs "$WORK/v1" 1
for deb in "$WORK"/v1/*.deb; do echo "   $(basename "$deb"): $(du -h "$deb" | cut -f1)"; done
for pkg in kho-agent kho-hub; do
  dpkg-deb -c "$WORK"/v1/${pkg}_*.deb >"$WORK/contents-$pkg.txt" || fail "dpkg-deb -c $pkg"
  dpkg-deb -I "$WORK"/v1/${pkg}_*.deb conffiles >"$WORK/conffiles-$pkg.txt" || fail "$pkg.deb has no conffiles"
  grep -q " ./usr/bin/$pkg\$" "$WORK/contents-$pkg.txt" || fail "$pkg.deb has no /usr/bin/$pkg"
  grep -q " ./lib/systemd/system/$pkg.service\$" "$WORK/contents-$pkg.txt" || fail "$pkg.deb has no systemd unit"
done
grep -qx '/etc/kho-agent/agent.toml' "$WORK/conffiles-kho-agent.txt" || fail "agent.toml is not a conffile"
grep -qx '/etc/kho-hub/hub.toml' "$WORK/conffiles-kho-hub.txt" || fail "hub.toml is not a conffile"

# ── install ──────────────────────────────────────────────────────────────────
step "dpkg -i (the agent as the guide says)"
dpkg -i "$WORK"/v1/kho-hub_*.deb >"$WORK/dpkg-install.log" 2>&1 || fail "dpkg -i kho-hub"
# The guide names the .deb with its version: when the version changes, update the guide.
[ -e "$WORK/v1/kho-agent_0.1.0-1_amd64.deb" ] || fail "the agent .deb is $(basename "$WORK"/v1/kho-agent_*.deb); update the version in $GUIDE"
(cd "$WORK/v1" && guide 'sudo dpkg -i kho-agent_0.1.0-1_amd64.deb' dpkg-install)
getent passwd kho >/dev/null || fail "the packages did not create the user kho"
[ "$(getent passwd kho | cut -d: -f7)" = /usr/sbin/nologin ] || fail "kho has a login shell"
for d in /var/lib/kho-agent /var/lib/kho-hub; do
  [ "$(stat -c '%U:%G %a' "$d")" = "kho:kho 750" ] || fail "$d is $(stat -c '%U:%G %a' "$d"), expected kho:kho 750"
done
for f in /etc/kho-agent/agent.toml /etc/kho-hub/hub.toml; do
  [ "$(stat -c '%U:%G %a' "$f")" = "root:kho 640" ] || fail "$f is $(stat -c '%U:%G %a' "$f"), expected root:kho 640"
done
if command -v systemd-analyze >/dev/null; then
  for u in kho-agent kho-hub; do
    systemd-analyze verify "/lib/systemd/system/$u.service" >"$WORK/verify-$u.log" 2>&1 \
      || fail "systemd-analyze verify $u.service"
  done
fi

# ── configure: what department IT and VNPT do, scripted ──────────────────────
step "configuring a local SQLite source, the hub and the agent"
mkdir -p "$SRC_DIR" && chmod 755 "$SRC_DIR"
sqlite3 "$SRC_DB" "CREATE TABLE ho_so (id INTEGER PRIMARY KEY, ten TEXT NOT NULL, updated_at TEXT NOT NULL);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
  INSERT INTO ho_so SELECT i, 'Hồ sơ số ' || i || ' — Sơn La', '2026-01-01 08:00:00' FROM n;"
chmod 644 "$SRC_DB"
sed -i "s|^listen = .*|listen = \"127.0.0.1:$PORT\"|" /etc/kho-hub/hub.toml
"${AS_KHO[@]}" /usr/bin/kho-hub --config /etc/kho-hub/hub.toml check >"$WORK/hub-check.log" 2>&1 || fail "kho-hub check"

start_hub() {
  "${AS_KHO[@]}" /usr/bin/kho-hub --config /etc/kho-hub/hub.toml run >>"$WORK/hub.log" 2>&1 &
  HUB_PID=$!
  for _ in $(seq 1 60); do
    [ -s /var/lib/kho-hub/tls/ca.pem ] && curl -sf --cacert /var/lib/kho-hub/tls/ca.pem \
      "https://127.0.0.1:$PORT/api/v1/status" >/dev/null 2>&1 && return 0
    kill -0 "$HUB_PID" 2>/dev/null || fail "the installed hub exited"
    sleep 0.5
  done
  fail "the installed hub does not answer on 127.0.0.1:$PORT after 30 s"
}
start_agent() {
  "${AS_KHO[@]}" /usr/bin/kho-agent --config /etc/kho-agent/agent.toml run >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
hub_rows() { # rows of dataset ho_so in the hub's status API (0 when not there yet)
  curl -sf --cacert /var/lib/kho-hub/tls/ca.pem "https://127.0.0.1:$PORT/api/v1/status" \
    | jq -r '[.datasets[] | select(.dataset == "ho_so") | .rows] | first // 0'
}
wait_rows() { # expected
  local rows=
  for _ in $(seq 1 120); do
    rows=$(hub_rows) || rows=?
    [ "$rows" = "$1" ] && return 0
    kill -0 "$AGENT_PID" 2>/dev/null || fail "the installed agent exited"
    sleep 0.5
  done
  fail "the hub has $rows rows of ho_so after 60 s, expected $1"
}
outbox_depth() { "${AS_KHO[@]}" /usr/bin/kho-agent --config /etc/kho-agent/agent.toml status --json | jq -r '.outbox.depth'; }
check_owners() {
  local stray
  stray=$(find /var/lib/kho-agent /var/lib/kho-hub ! -user kho -printf '%p (%u)\n')
  [ -z "$stray" ] || fail "files not owned by kho: $stray"
}

step "starting the installed hub as kho"
start_hub
# VNPT registers the agent (docs/operator.md) and sends the enrollment token and the hub's CA.
"${AS_KHO[@]}" /usr/bin/kho-hub --config /etc/kho-hub/hub.toml agent add "$AGENT_ID" --department so_thu_nghiem \
  --datasets ho_so >"$WORK/agent-add.log" 2>&1 || fail "kho-hub agent add"
MA_DANG_KY=$(sed -n 2p "$WORK/agent-add.log")
[ -n "$MA_DANG_KY" ] || fail "kho-hub agent add printed no enrollment token"
mkdir -p "$WORK/from-vnpt" && cp /var/lib/kho-hub/tls/ca.pem "$WORK/from-vnpt/hub-ca.pem"
sed -i -e "s|^id = .*|id = \"$AGENT_ID\"|" -e "s|^url = .*|url = \"https://127.0.0.1:$PORT\"|" \
  -e "s|^path = .*|path = \"$SRC_DB\"|" -e 's|^poll_interval = .*|poll_interval = "1s"|' /etc/kho-agent/agent.toml
(cd "$WORK/from-vnpt" && guide 'sudo install -m 0640 -g kho hub-ca.pem /etc/kho-agent/hub-ca.pem')
guide 'sudo -u kho kho-agent --config /etc/kho-agent/agent.toml enroll --token "$MA_DANG_KY"' agent-enroll
for f in /var/lib/kho-agent/token /var/lib/kho-agent/signing.key; do
  [ "$(stat -c '%U:%G %a' "$f")" = "kho:kho 600" ] || fail "$f is $(stat -c '%U:%G %a' "$f" 2>&1) after enroll, expected kho:kho 600"
done
guide 'sudo -u kho kho-agent --config /etc/kho-agent/agent.toml check' agent-check

# ── sync ─────────────────────────────────────────────────────────────────────
step "first sync with the guide's sync --once, then the service as kho"
guide 'sudo -u kho kho-agent --config /etc/kho-agent/agent.toml sync --once' agent-sync
[ "$(hub_rows)" = 500 ] || fail "after sync --once the hub has $(hub_rows) rows of ho_so, expected 500"
guide 'sudo -u kho kho-agent --config /etc/kho-agent/agent.toml status' agent-status
grep -q ho_so "$WORK/agent-status.log" || fail "kho-agent status does not list the dataset ho_so"
start_agent
wait_rows 500
[ "$(ps -o user= -p "$AGENT_PID" | tr -d ' ')" = kho ] || fail "the agent runs as $(ps -o user= -p "$AGENT_PID")"
[ "$(ps -o user= -p "$HUB_PID" | tr -d ' ')" = kho ] || fail "the hub runs as $(ps -o user= -p "$HUB_PID")"
[ -s /var/lib/kho-agent/outbox.sqlite ] || fail "no outbox in /var/lib/kho-agent"
check_owners

# ── changes wait in the outbox while the hub is down ─────────────────────────
step "hub stopped; 200 new rows must wait in the outbox"
stop_pid "$HUB_PID" || fail "the hub did not stop on SIGTERM"
HUB_PID=
sqlite3 "$SRC_DB" "WITH RECURSIVE n(i) AS (SELECT 501 UNION ALL SELECT i + 1 FROM n WHERE i < 700)
  INSERT INTO ho_so SELECT i, 'Hồ sơ số ' || i, '2026-01-02 08:00:00' FROM n;"
depth=0
for _ in $(seq 1 60); do depth=$(outbox_depth) || depth=0; [ "$depth" -ge 200 ] && break; sleep 0.5; done
[ "$depth" -ge 200 ] || fail "outbox depth $depth after 30 s, expected at least 200"
stop_pid "$AGENT_PID" || fail "the agent did not stop on SIGTERM"
AGENT_PID=
depth=$(outbox_depth)
agent_conf_sum=$(sha256sum /etc/kho-agent/agent.toml)
hub_conf_sum=$(sha256sum /etc/kho-hub/hub.toml)
echo "   outbox holds $depth change(s)"

# ── upgrade ──────────────────────────────────────────────────────────────────
step "upgrading both packages to a rebuilt .deb (revision 2)"
build_debs "$WORK/v2" 2
dpkg -i "$WORK"/v2/kho-hub_*.deb "$WORK"/v2/kho-agent_*.deb >"$WORK/dpkg-upgrade.log" 2>&1 || fail "dpkg -i (upgrade)"
for pkg in kho-agent kho-hub; do
  v=$(dpkg-query -W -f '${Version}' "$pkg")
  case "$v" in *-2) ;; *) fail "$pkg is at $v after the upgrade, expected revision 2" ;; esac
done
[ "$(sha256sum /etc/kho-agent/agent.toml)" = "$agent_conf_sum" ] || fail "the upgrade changed /etc/kho-agent/agent.toml"
[ "$(sha256sum /etc/kho-hub/hub.toml)" = "$hub_conf_sum" ] || fail "the upgrade changed /etc/kho-hub/hub.toml"
[ "$(stat -c '%U:%G %a' /etc/kho-agent/agent.toml)" = "root:kho 640" ] || fail "agent.toml lost its owner/mode"
[ "$(outbox_depth)" = "$depth" ] || fail "outbox depth is $(outbox_depth) after the upgrade, was $depth"
check_owners

step "restarting hub and agent after the upgrade; the outbox must drain into the warehouse"
start_hub
wait_rows 500 # the hub's warehouse survived the upgrade too
start_agent
wait_rows 700
for _ in $(seq 1 60); do [ "$(outbox_depth)" = 0 ] && break; sleep 0.5; done
[ "$(outbox_depth)" = 0 ] || fail "outbox depth $(outbox_depth) after the drain, expected 0"
check_owners
stop_pid "$AGENT_PID" || fail "the agent did not stop on SIGTERM"
AGENT_PID=
stop_pid "$HUB_PID" || fail "the hub did not stop on SIGTERM"
HUB_PID=

# ── remove, purge ────────────────────────────────────────────────────────────
step "dpkg -r keeps configs and data; dpkg -P removes them (the hub's data stays)"
dpkg -r kho-agent kho-hub >"$WORK/dpkg-remove.log" 2>&1 || fail "dpkg -r"
[ ! -e /usr/bin/kho-agent ] && [ ! -e /usr/bin/kho-hub ] || fail "binaries left after dpkg -r"
[ -e /etc/kho-agent/agent.toml ] && [ -e /etc/kho-hub/hub.toml ] || fail "dpkg -r removed a config"
[ -s /var/lib/kho-agent/outbox.sqlite ] || fail "dpkg -r removed the outbox"
rm -f /etc/kho-agent/hub-ca.pem
dpkg -P kho-agent kho-hub >"$WORK/dpkg-purge.log" 2>&1 || fail "dpkg -P"
[ ! -e /etc/kho-agent ] && [ ! -e /etc/kho-hub ] || fail "dpkg -P left /etc/kho-agent or /etc/kho-hub"
[ ! -e /var/lib/kho-agent ] || fail "dpkg -P left /var/lib/kho-agent"
[ -d /var/lib/kho-hub ] || fail "dpkg -P removed /var/lib/kho-hub (the warehouse must be kept)"
rm -rf /var/lib/kho-hub "$SRC_DIR"
OK=1
echo "deb-install: all steps passed"
