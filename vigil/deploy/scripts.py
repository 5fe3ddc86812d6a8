"""The shell a deploy runs on a host, as data: each script reads its values only from "$1", "$2"...

Every script is a constant; the commands that carry values are built by `as_deploy` (the deploy user)
or `helper` (a root helper the deploy user's sudo allows). The host's state comes back in @sections.
"""

from __future__ import annotations

from vigil.core.commands import Command, script
from vigil.deploy.settings import COLORS, UNIT_HELPER, Settings

# --- what the host is asked first ------------------------------------------------------------

STATE = r'''
base=$1; upstream=$2; name=$3; blue_unit=$4; green_unit=$5
# Only regular files are read: a FIFO or a device put in their place must not stall the reader.
regular() { [ -f "$1" ] && cat -- "$1" 2>/dev/null; }
echo "@lock"; regular "$base/.deploy-lock/owner.json"; echo
echo "@current"; readlink -- "$base/current" 2>/dev/null
for color in blue green; do echo "@color $color"; readlink -- "$base/colors/$color" 2>/dev/null; done
echo "@units"; systemctl is-active -- "$blue_unit" "$green_unit" 2>/dev/null
echo "@upstream"; sed -n "s/^upstream ${name} { server 127\.0\.0\.1:\([0-9]*\);.*/\1/p" "$upstream" 2>/dev/null
echo "@releases"
for dir in "$base"/releases/*/; do
    [ -d "$dir" ] || continue
    id=$(basename -- "$dir")
    case "$id" in *.partial) continue ;; esac
    if [ -e "$dir/.vigil-bad" ]; then status=bad; else status=good; fi
    printf '%s %s ' "$id" "$status"; regular "$dir/.vigil-release.json" | tr -d '\n'; echo
done
echo "@history"; [ -f "$base/deploys.jsonl" ] && tail -n 200 -- "$base/deploys.jsonl" 2>/dev/null
echo "@end"
'''


# Several services' state in one round trip (deploy.status, deploy.releases): STATE once per service.
STATES = "state() {\n" + STATE + "\n}\n" + r'''
while [ "$#" -ge 6 ]; do
    echo "@service $1"
    state "$2" "$3" "$4" "$5" "$6"
    shift 6
done
'''

# STATES, then root's own trail of what was asked of the deploy user's root helpers (deploy.releases),
# which the deploy user reads only through the unit helper; a host without the helper yet answers none.
STATES_AND_TRAIL = STATES + f'''echo "@trail"; sudo -n {UNIT_HELPER} trail 2>/dev/null || true
'''


# --- the commands, as data -------------------------------------------------------------------

# silence LOCK: seconds since the lock's holder last touched its heartbeat (without one, since the
# lock was made). Taking a lock and the preflight judge a lock's life by the same rule.
SILENCE = r'''
silence() {
    beat=$(stat -c %Y -- "$1/heartbeat" 2>/dev/null || stat -c %Y -- "$1" 2>/dev/null || date +%s)
    echo $(( $(date +%s) - beat ))
}
'''

# The lock is a directory (mkdir is atomic); its holder touches `heartbeat` while it runs. $2: the
# lease: a lock whose heartbeat (or, without one, whose directory) is older than that many seconds
# belongs to a deploy that died or was cut off, and is taken over (one taker wins the rename), its
# old owner printed under @stale-lock. A live holder: its owner.json and @silent SECONDS, exit 75.
TAKE_LOCK = SILENCE + r'''
lock=$1; lease=$2
case $lease in ''|*[!0-9]*) echo "the lock lease must be a number of seconds, got '$lease'" >&2; exit 1 ;; esac
held() { cat -- "$lock/owner.json" 2>/dev/null; echo; echo "@silent $1"; exit 75; }
if ! mkdir -- "$lock" 2>/dev/null; then
    if [ -d "$lock" ]; then
        silent=$(silence "$lock")
        [ "$silent" -le "$lease" ] && held "$silent"
        if mv -T -- "$lock" "$lock.stale.$$" 2>/dev/null; then
            echo "@stale-lock $silent"; cat -- "$lock.stale.$$/owner.json" 2>/dev/null; echo
            rm -rf -- "$lock.stale.$$"
        fi
    fi
    # Only an existing lock means another deploy; otherwise the directory cannot be made (its error).
    mkdir -- "$lock" 2>/dev/null || { [ -d "$lock" ] && held 0; mkdir -- "$lock" || exit 1; }
fi
cat > "$lock/owner.json"
touch -- "$lock/heartbeat"
'''

# ours LOCK TOKEN: whether the lock carries this deploy's token (its heartbeat, release and the clean-up
# after a reconnect are for its own deploy only).
OURS = r'''
ours() { grep -qF "\"token\": \"$2\"" "$1/owner.json" 2>/dev/null; }
'''

# While a deploy runs it says it is alive, on its own lock only (after a takeover, not on the new one).
HEARTBEAT = OURS + r'''
lock=$1; token=$2
ours "$lock" "$token" && touch -- "$lock/heartbeat"
'''

# Only the deploy that took the lock removes it (its token is in owner.json): after a forced
# unlock, the old deploy must not remove the lock a new deploy holds. Exit 3: not ours (left).
RELEASE_LOCK = OURS + r'''
lock=$1; token=$2
[ -d "$lock" ] || exit 0
ours "$lock" "$token" || exit 3
rm -rf -- "$lock"
'''

# Exit 0 when the lock is still this deploy's (its token in owner.json): after a lost connection, the
# next deploy may have taken it over, and then the host is that deploy's to touch, not ours.
STILL_OURS = OURS + r'''
ours "$1" "$2"
'''

# The lock, then (only once it is ours) the host's state: one round trip.
# ...and the attempt's first line in the host's own history ($4, into $3): a deploy cut off later
# is still on record there.
LOCK_AND_STATE = "state() {\n" + STATE + "\n}\n" + TAKE_LOCK + r'''
[ -n "$4" ] && printf '%s\n' "$4" >> "$3"
shift 4
state "$@"
'''

# The artifact arrives on stdin into a .partial directory; only a complete, checked
# unpack is renamed into place, so a dropped upload never leaves a release behind.
UNPACK = r'''
set -eu
release=$1; sha=$2; group=$3; id=$4; meta=$5
partial="$release.partial"
rm -rf -- "$partial" "$partial.tar.gz"
cat > "$partial.tar.gz"
got=$(sha256sum -- "$partial.tar.gz" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then rm -f -- "$partial.tar.gz"; echo "checksum mismatch: got $got, want $sha" >&2; exit 65; fi
mkdir -- "$partial"
tar -xzf "$partial.tar.gz" -C "$partial" --no-same-owner
rm -f -- "$partial.tar.gz"
printf 'RELEASE_ID=%s\n' "$id" > "$partial/release.env"
printf '%s\n' "$meta" > "$partial/.vigil-release.json"
chgrp -R -- "$group" "$partial"
chmod -R g+rX,g-w,o-rwx -- "$partial"
mv -T -- "$partial" "$release"
'''

# ln -sfn unlinks then links: for a moment there is no link. A new link renamed over the
# old one is atomic.
RELINK = 'ln -sfn -- "$2" "$1.vigil-new" && mv -T -f -- "$1.vigil-new" "$1"'

# ask PORT PATH: the answer's HTTP status in $code and its body in $body (curl's own error when
# nothing came back), so a failed check shows what the app said, not only that it failed.
ASK = r'''
ask() {
    body=$(curl -sS --max-time 2 -w '\n@@%{http_code}' "http://127.0.0.1:$1$2" 2>&1)
    code=${body##*@@}; body=${body%@@*}
    case $code in 2??) return 0 ;; 000) return 1 ;; *) body="HTTP $code: $body"; return 1 ;; esac
}
'''

# The idle color must answer its health check `needed` times in a row AND stay up, healthy, for
# `stable` seconds with systemd's NRestarts and MainPID unchanged: a release that crashes a few
# seconds after it starts passes three quick checks, but never this. $6: the color's unit.
HEALTH_GATE = ASK + r'''
port=$1; path=$2; release=$3; needed=$4; timeout=$5; unit=$6; stable=$7
# why: what last broke a streak of passes (a failed check, another release, a restart).
passed=0; since=0; why="no answer"; end=$(( $(date +%s) + timeout )); seen=""; restarts=0
while [ "$(date +%s)" -lt "$end" ]; do
    running=$(systemctl show -p NRestarts -p MainPID --value -- "$unit" 2>/dev/null | paste -sd ' ' -)
    if [ -n "$seen" ] && [ "$running" != "$seen" ]; then
        passed=0; restarts=$((restarts + 1)); why="$unit restarted (NRestarts and MainPID: $seen -> $running)"
    fi
    seen=$running
    if ask "$port" "$path"; then
        if [ -z "$release" ] || printf '%s' "$body" | grep -qF "\"release\":\"$release\""; then
            [ "$passed" -eq 0 ] && since=$(date +%s)
            passed=$((passed + 1))
        else
            passed=0; why="answered for another release: $body"
        fi
    else
        passed=0; why=$body
    fi
    up=$(( $(date +%s) - since ))
    if [ "$passed" -ge "$needed" ] && [ "$up" -ge "$stable" ]; then
        # The second line: the unit's NRestarts and MainPID, which the watch after the switch holds it to.
        printf 'healthy for %ss: %s checks in a row, no restart\n%s\n' "$up" "$passed" "$seen"; exit 0
    fi
    sleep 1
done
[ "$restarts" -gt 0 ] && why="$why; $unit restarted $restarts times meanwhile"
echo "not healthy for ${stable}s in a row within ${timeout}s: $why" >&2
exit 1
'''

# After the switch, the live color is watched for $6 seconds while the old one still runs: a restart
# (NRestarts or MainPID changed) or $7 failed checks in a row fail the watch, which switches back.
WATCH = ASK + r'''
port=$1; path=$2; release=$3; unit=$4; start=$5; seconds=$6; allowed=$7
end=$(( $(date +%s) + seconds )); failed=0; checks=0
seen=$(systemctl show -p NRestarts -p MainPID --value -- "$unit" 2>/dev/null | paste -sd ' ' -)
[ -n "$start" ] && [ "$seen" != "$start" ] && { echo "$unit restarted since its health gate" >&2; exit 1; }
while [ "$(date +%s)" -lt "$end" ]; do
    running=$(systemctl show -p NRestarts -p MainPID --value -- "$unit" 2>/dev/null | paste -sd ' ' -)
    if [ "$running" != "$seen" ]; then echo "$unit restarted (NRestarts and MainPID: $seen -> $running)" >&2; exit 1; fi
    checks=$((checks + 1))
    if ask "$port" "$path" && { [ -z "$release" ] || printf '%s' "$body" | grep -qF "\"release\":\"$release\""; }; then
        failed=0
    else
        failed=$((failed + 1))
        [ "$failed" -ge "$allowed" ] && { echo "$failed checks in a row failed: $body" >&2; exit 1; }
    fi
    sleep 1
done
echo "watched ${seconds}s: $checks checks, no restart"
'''

# Before anything is built or backed up, what would stop the deploy on a host, one line each: a
# helper sudo would ask a password for, too little disk under the service's directory, a live lock
# (unless the deploy waits for it: $5 = 0), no boot helper ($6: a host onboarded before it, where a boot
# starts the color a deploy last enabled, while deploys no longer enable one). Read-only, as the deploy user.
PREFLIGHT = SILENCE + r'''
base=$1; need=$2; lock=$3; lease=$4; check_lock=$5; boot=$6; shift 6
[ -x "$boot" ] ||
    echo "boot: $boot is missing, so a reboot would not start the color nginx serves (run provision.server first)"
for helper in "$@"; do
    sudo -n -l -- "$helper" >/dev/null 2>&1 || echo "sudo: $(id -un) may not run $helper without a password"
done
free=$(df -Pm -- "$base" 2>/dev/null | awk 'NR==2 {print $4}')
[ -z "$free" ] && echo "disk: $base is missing (run provision.server first)"
[ -n "$free" ] && [ "$free" -lt "$need" ] && echo "disk: $free MiB free under $base, $need MiB needed (app_min_free_mb)"
if [ "$check_lock" = 1 ] && [ -d "$lock" ]; then
    silent=$(silence "$lock")
    [ "$silent" -le "$lease" ] && echo "@lock $silent $(tr -d '\n' < "$lock/owner.json" 2>/dev/null)"
fi
exit 0
'''

# Breaking a lock: renamed away first (atomic), so a deploy that takes the lock meanwhile keeps its own.
BREAK_LOCK = r'''
lock=$1; broken="$1.broken"
rm -rf -- "$broken"
[ -e "$lock" ] || { echo "@free"; exit 0; }
mv -T -- "$lock" "$broken" || exit 1
cat -- "$broken/owner.json" 2>/dev/null; echo
rm -rf -- "$broken"
'''

# The current release ($3) must have the directory (else the setting is wrong, and "nothing to
# revert" would be a lie); the target may have none yet.
LIST_MIGRATIONS = r'''
releases=$1; dir=$2; shift 2
[ -d "$releases/$1/$dir" ] || { echo "no directory $dir in release $1 (app_migrations)" >&2; exit 1; }
for release in "$@"; do
    echo "@release $release"
    ls -1 -- "$releases/$release/$dir" 2>/dev/null
done
# The restore point made before the first release's migrations, if any (vigil.deploy.safety).
echo "@point"
# Made only where the env has a backup host: none is no failure.
cat -- "$releases/$1/.vigil-restore-point.json" 2>/dev/null || true
'''


# After the switch, the old color ($2) either stays running for the rollback window ($4 seconds, 0: no
# window; while the host has $5 MiB of memory available) with a timer that stops it at its end, or drains
# ($3 seconds) and stops. Which color a boot starts needs nothing here: the one nginx serves (roles/app's
# served-colors unit). Says which: "@warm MIB" or "@cold WHY"; a failed stop is named.
RETIRE = r'''
helper=$1; old=$2; drain=$3; window=$4; need=$5
if [ "$window" -gt 0 ]; then
    available=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
    if [ "${available:-0}" -lt "$need" ]; then
        echo "@cold only ${available:-?} MiB of memory available, $need MiB needed to keep it running"
    elif sudo -n "$helper" stop-after "$window" "$old"; then
        echo "@warm $available"
        exit 0
    else
        echo "@cold the unit helper cannot schedule its stop (provision.server brings the new helper)"
    fi
fi
sleep "$drain"
sudo -n "$helper" stop "$old" || { echo "vigil: stopping the old color failed" >&2; exit 1; }
'''

# A rollback to the color still running from before the last deploy, in one round trip: the color
# ($4, on port $1) must be running and answer its health check ($2, naming the release $3 when set),
# else exit 10 and nothing changed (the rollback starts it cold instead). Then the upstream switch
# ($6 $7 $8), which is also what makes it the color a boot starts; the color it left ($9) stops once
# drained (${10} s), by a timer on the host so that the rollback does not wait for it.
WARM_SWITCH = ASK + r'''
port=$1; path=$2; release=$3; unit=$4; helper=$5; switch=$6; service=$7; color=$8; old=$9; drain=${10}
[ "$(systemctl is-active -- "$unit" 2>/dev/null)" = active ] || { echo "$unit is not running"; exit 10; }
ask "$port" "$path" || { echo "$unit did not answer its health check: $body"; exit 10; }
if [ -n "$release" ] && ! printf '%s' "$body" | grep -qF "\"release\":\"$release\""; then
    echo "$unit answered for another release: $body"; exit 10
fi
sudo -n "$switch" "$service" "$color" >&2 || exit 1
sudo -n "$helper" stop-after "$drain" "$old" 2>/dev/null || {
    sleep "$drain"; sudo -n "$helper" stop "$old" || echo "vigil: stopping $old failed" >&2; }
echo "healthy, switched"
'''

# After the switch, in one round trip: `current` (atomic), the history line (stdin), pruning, the
# lock (if still ours). Exit 1: `current` was not switched; 2: the history line was not written;
# 3: a release was not pruned (the lock is released); 4: the lock could not be removed.
FINISH = OURS + RELINK + r''' || exit 1
rm -f -- "$3"
history=$4; releases=$5; lock=$6; token=$7; shift 7
cat >> "$history" || exit 2
pruned=0
for id in "$@"; do rm -rf -- "$releases/$id" || pruned=3; done
ours "$lock" "$token" && { rm -rf -- "$lock" || exit 4; }
exit "$pruned"
'''

# One JSON line (on stdin) at the end of a service's deploy history ($1).
APPEND_HISTORY = 'cat >> "$1"'

# A release that failed (its gate, its migration) or that an incident rolled back from: no rollback
# returns to it. $1: the release's directory, $2: its id, $3: who marked it.
# The restore point made before a release's migrations, recorded beside its files (safety.py).
RECORD_POINT = 'test -d "$1" && printf \'%s\\n\' "$2" > "$1/.vigil-restore-point.json"'
MARK_BAD = 'test -d "$1" && printf \'{"id": "%s", "status": "bad", "by": "%s"}\\n\' "$2" "$3" > "$1/.vigil-bad"'


def helper(*argv: str) -> Command:
    """A root helper the deploy user's sudo allows (the app's units, the upstream switch)."""
    return Command(tuple(argv), sudo=True)


def as_deploy(body: str, *args: str, stdin: bytes | None = None) -> Command:
    """A script run as the deploy user (who owns the releases), with its values as arguments."""
    return script(body, *args, sudo=False, stdin=stdin)


def states_command(settings: list[Settings], trail: bool = False) -> Command:
    """Each service's state (STATE) in one round trip, as `parse_states` reads it; with `trail`, root's
    trail of the deploy user's helpers after it (STATES_AND_TRAIL, as `parse_trail` splits it)."""
    args = []
    for one in settings:
        layout = one.layout
        args += [
            layout.service,
            layout.base,
            one.upstream_file,
            one.upstream_name,
            *(layout.unit(color) for color in COLORS),
        ]
    return script(STATES_AND_TRAIL if trail else STATES, *args, sudo=False)
