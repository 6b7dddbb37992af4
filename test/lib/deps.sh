# Shell helpers shared by ./quickstart and test/run (sourced, not executed).
#
# sb_need_packages PKG...: installs the Debian packages that are not installed yet. apt-get update
# runs only when something is missing, so a prepared machine starts without touching the network.
# Services that packages would start on install (the distribution's PostgreSQL cluster on 5432,
# pgbouncer on 6432) are held back: they would take the ports the project uses.

sb_missing_packages()
{
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
			printf '%s\n' "$p"
	done
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
	local rc=0
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null || rc=$?
	if [ $rc = 0 ]; then
		# shellcheck disable=SC2086
		apt-get install -y -q --no-install-recommends $missing </dev/null || rc=$?
	fi
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
