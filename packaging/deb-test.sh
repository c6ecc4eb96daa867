#!/usr/bin/env bash
# Package test: builds the amd64 .deb twice (two versions), checks it with
# lintian, installs, upgrades, removes and purges it on THIS machine, and
# checks what each step must leave behind. It changes the system (a package,
# a system user, /etc and /var/lib paths), so it runs only as root, through
# `make deb-test` (CI), and refuses to touch an existing install outside CI.
# It purges what it installed when it ends, pass or fail.
#
# Not tested: starting the service (no systemd as PID 1 here); the unit is
# checked with `systemd-analyze verify` and the binary is run by hand as the
# service user instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=wittra-gateway
if [ "$(id -u)" != 0 ]; then
	echo "deb-test: must run as root (it installs and purges the package); not running" >&2
	exit 1
fi
for tool in dpkg lintian systemd-analyze runuser; do
	command -v "$tool" >/dev/null || { echo "deb-test: $tool not installed" >&2; exit 1; }
done
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed\|config-files'; then
	if [ "${CI:-}" != true ]; then
		echo "deb-test: $PKG is installed on this machine; not touching it (CI=true purges it)" >&2
		exit 1
	fi
	dpkg -P "$PKG" >/dev/null
fi
user_existed=false
if getent passwd "$PKG" >/dev/null; then
	if [ "${CI:-}" != true ]; then
		echo "deb-test: user $PKG exists; the test checks that postinst creates it (CI=true deletes it first)" >&2
		exit 1
	fi
	deluser --system "$PKG" >/dev/null 2>&1 || userdel "$PKG"
	getent group "$PKG" >/dev/null && { delgroup --system "$PKG" >/dev/null 2>&1 || groupdel "$PKG"; }
fi

work=$(mktemp -d /tmp/deb-test.XXXXXX)
gw_pid=
cleanup() {
	[ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
	if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'installed\|config-files'; then
		dpkg -P "$PKG" >/dev/null 2>&1 || true
	fi
	# Purge keeps the system user (Debian practice); the test made it, so
	# it removes it.
	if [ "$user_existed" = false ] && getent passwd "$PKG" >/dev/null; then
		deluser --system "$PKG" >/dev/null 2>&1 || userdel "$PKG" || true
		getent group "$PKG" >/dev/null && { delgroup --system "$PKG" >/dev/null 2>&1 || groupdel "$PKG" || true; }
	fi
	rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
check() { # check "what" command...
	local what=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		echo "ok   $what"
	else
		failed=$((failed + 1))
		echo "FAIL $what"
	fi
}
mode_is() { [ "$(stat -c '%a %U:%G' "$1")" = "$2" ] || { echo "     $1: $(stat -c '%a %U:%G' "$1"), want $2"; return 1; }; }
contains() { grep -q -- "$2" <<<"$1" || { echo "     want \"$2\" in: $1"; return 1; }; }

# --- build -------------------------------------------------------------
v1=$(go -C packaging run ./mkdeb -print-version)
v2="$v1+upgradetest"
echo "deb-test: building $PKG $v1 and $v2 (amd64)"
go -C packaging run ./mkdeb -arch amd64 -out "$work/v1" -version "$v1" >/dev/null
go -C packaging run ./mkdeb -arch amd64 -out "$work/v2" -version "$v2" >/dev/null
deb1=$(ls "$work"/v1/*.deb)
deb2=$(ls "$work"/v2/*.deb)
echo "deb-test: $(basename "$deb1") is $(stat -c %s "$deb1") bytes"

lintian --fail-on error --tag-display-limit 0 "$deb1" >"$work/lintian.txt" 2>&1 && lintian_rc=0 || lintian_rc=$?
grep -v 'running with root privileges' "$work/lintian.txt" | sed 's/^/     lintian: /' || true
check "lintian: no errors" test "$lintian_rc" = 0

# --- install -----------------------------------------------------------
check "dpkg -i installs" dpkg -i "$deb1" </dev/null
check "postinst created the system user" bash -c "getent passwd $PKG | awk -F: '\$3 < 1000 && \$6 == \"/var/lib/$PKG\" && \$7 ~ /nologin/ {ok=1} END {exit !ok}'"
check "config.yaml 0640 root:$PKG" mode_is /etc/$PKG/config.yaml "640 root:$PKG"
check "env 0640 root:$PKG" mode_is /etc/$PKG/env "640 root:$PKG"
check "state dir 0750 $PKG:$PKG" mode_is /var/lib/$PKG "750 $PKG:$PKG"
check "binary 0755 in /usr/bin" mode_is /usr/bin/$PKG "755 root:root"
check "config and env are conffiles" bash -c "dpkg-query -W -f='\${Conffiles}' $PKG | grep -q /etc/$PKG/config.yaml && dpkg-query -W -f='\${Conffiles}' $PKG | grep -q /etc/$PKG/env"
check "docs and copyright installed" test -s /usr/share/doc/$PKG/README.md -a -s /usr/share/doc/$PKG/copyright
check "wittra-gateway version from /usr/bin" contains "$(/usr/bin/$PKG version)" "$PKG $v1 "
check "packaged config passes check-config as the service user" \
	runuser -u $PKG -- /usr/bin/$PKG check-config -config /etc/$PKG/config.yaml
sa_out=$(systemd-analyze verify /lib/systemd/system/$PKG.service 2>&1) && sa_rc=0 || sa_rc=$?
check "systemd-analyze verify on the installed unit" test "$sa_rc" = 0 -a -z "$sa_out"
[ -n "$sa_out" ] && echo "$sa_out" | sed 's/^/     systemd-analyze: /'

# --- a queued message and a changed config ------------------------------
# The gateway runs as the service user on loopback port 0 with its MQTT
# sink pointing at a closed port, so the accepted message stays queued.
marker="# changed by deb-test $$"
cat >/etc/$PKG/config.yaml <<EOF
$marker
log: {level: info, format: json}
webhook: {listen: "127.0.0.1:0"}
buffer: {path: /var/lib/$PKG/queue.db}
admin: {listen: ""}
broker: {enabled: false}
sinks: [{name: upstream, type: mqtt, url: "tcp://127.0.0.1:1"}]
EOF
(cd /var/lib/$PKG && exec runuser -u $PKG -- /usr/bin/$PKG run -config /etc/$PKG/config.yaml) 2>"$work/gw.log" &
gw_pid=$!
addr=
for _ in $(seq 1 300); do
	# The start line names the webhook address ("webhook http://127.0.0.1:N").
	addr=$(grep -oE '(webhook https?://|"webhook":")127\.0\.0\.1:[0-9]+' "$work/gw.log" | head -1 | grep -oE '127\.0\.0\.1:[0-9]+' || true)
	[ -n "$addr" ] && break
	sleep 0.1
done
status=
if [ -n "$addr" ]; then
	body='{"deviceId":"D1","payloadId":"deb-test-1"}'
	exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}"
	printf 'POST /wittra HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "$addr" "${#body}" "$body" >&3
	read -r status <&3 || true
	exec 3<&-
fi
kill -TERM "$gw_pid" 2>/dev/null || true
wait "$gw_pid" 2>/dev/null || true
gw_pid=
check "the installed gateway, run as $PKG, accepts a webhook" contains "${status:-no answer; log: $(tail -c 2000 "$work/gw.log")}" " 200"
stats1=$(runuser -u $PKG -- /usr/bin/$PKG queue stats -config /etc/$PKG/config.yaml 2>&1 || true)
check "the message is queued" contains "$stats1" "messages     1"

# --- upgrade -----------------------------------------------------------
check "dpkg -i upgrades to a second build" dpkg -i "$deb2" </dev/null
check "upgrade: version is the new one" contains "$(/usr/bin/$PKG version)" "$PKG $v2 "
check "upgrade: the changed config is kept" grep -qx -- "$marker" /etc/$PKG/config.yaml
check "upgrade: config still 0640 root:$PKG" mode_is /etc/$PKG/config.yaml "640 root:$PKG"
stats2=$(runuser -u $PKG -- /usr/bin/$PKG queue stats -config /etc/$PKG/config.yaml 2>&1 || true)
check "upgrade: the queue file and its message are kept" contains "$stats2" "messages     1"

# --- remove keeps data, purge deletes it ---------------------------------
check "dpkg -r removes" dpkg -r $PKG </dev/null
check "remove: binary gone" test ! -e /usr/bin/$PKG
check "remove: package left in config-files state" contains "$(dpkg-query -W -f='${Status}' $PKG)" "config-files"
check "remove: queue file kept" test -s /var/lib/$PKG/queue.db
check "remove: config kept" grep -qx -- "$marker" /etc/$PKG/config.yaml
check "dpkg -P purges" dpkg -P $PKG </dev/null
check "purge: state dir deleted" test ! -e /var/lib/$PKG
check "purge: config dir deleted" test ! -e /etc/$PKG
check "purge: package unknown to dpkg" bash -c "! dpkg-query -W -f='\${Status}' $PKG 2>/dev/null | grep -q 'installed\|config-files'"

echo "deb-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
