# Shell helpers shared by ./quickstart and test/run (sourced, not executed).
#
# sb_need_packages PKG...: installs the Debian packages that are not installed yet, and only those:
# apt-get update runs only when something is missing, so a prepared machine starts without touching
# the network, and `apt-get install --no-upgrade` never upgrades a package that is already there.
# Services that packages would start on install (the distribution's PostgreSQL cluster on 5432,
# pgbouncer on 6432) are held back (policy-rc.d): they would take the ports the project uses; and
# a service the install enabled (a package's postinst enables its unit and its init script) is
# disabled again, so that nothing starts at the next boot that was not set to start before.

sb_missing_packages()
{
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
			printf '%s\n' "$p"
	done
}

# sb_enabled_services: one line per service enabled to start at boot, under systemd (a symlink in a
# *.wants directory) or sysvinit (an S link in /etc/rc[2-5].d), e.g. "systemd pgbouncer.service".
sb_enabled_services()
{
	local l root=${SB_SYSROOT:-}
	for l in "$root"/etc/systemd/system/*.wants/*.service; do
		[ -L "$l" ] && printf 'systemd %s\n' "${l##*/}"
	done
	for l in "$root"/etc/rc[2-5].d/S[0-9][0-9]*; do
		[ -L "$l" ] && printf 'sysv %s\n' "${l##*/S[0-9][0-9]}"
	done
	return 0
}

# sb_disable_new_services BEFORE: disables the services enabled now that were not in BEFORE (the
# output of sb_enabled_services), the way their packages' maintainer scripts would. SB_SYSROOT
# (tests only) looks at a copy of /etc under that directory instead, and only removes links there.
sb_disable_new_services()
{
	local before=$1 kind name root=${SB_SYSROOT:-}
	while read -r kind name; do
		[ -z "$name" ] && continue
		printf '%s\n' "$before" | grep -qxF "$kind $name" && continue
		echo "disabling $name ($kind), enabled by its package's install"
		case $kind in
		systemd)
			if [ -z "$root" ] && command -v deb-systemd-helper >/dev/null; then
				deb-systemd-helper disable "$name" >/dev/null 2>&1
			fi
			rm -f "$root"/etc/systemd/system/*.wants/"$name"
			;;
		sysv)
			if [ -n "$root" ] || ! update-rc.d "$name" disable >/dev/null 2>&1; then
				rm -f "$root"/etc/rc[2-5].d/S[0-9][0-9]"$name"
			fi
			;;
		esac
	done < <(sb_enabled_services | sort -u)
}

sb_need_packages()
{
	local missing policy_added=
	missing=$(sb_missing_packages "$@")
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "missing Debian packages (install them as root): $(echo $missing)" >&2
		return 1
	fi
	echo "installing: $(echo $missing)"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		policy_added=1
	fi
	local rc=0 enabled
	enabled=$(sb_enabled_services | sort -u)
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null || rc=$?
	if [ $rc = 0 ]; then
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends --no-upgrade $missing </dev/null || rc=$?
	fi
	sb_disable_new_services "$enabled"
	[ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
	return $rc
}

# sb_as_postgres CMD...: runs CMD as the `postgres` OS user when we are root (initdb refuses
# root, and the pooler refuses root without -u), as ourselves otherwise.
sb_as_postgres()
{
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}
