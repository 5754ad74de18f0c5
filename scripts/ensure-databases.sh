#!/usr/bin/env bash
# Make sure PostgreSQL (5432), MariaDB (3306) and Redis (6379) answer on localhost, for the
# database service's tests. The project's machines run them already; a fresh Debian/Ubuntu
# machine gets them from apt and started here (as root, or with sudo).
set -uo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
updated=""
need() {  # need <package...>
  [ -n "$updated" ] || { $SUDO apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
wait_port() { for _ in $(seq 1 60); do open "$1" && return 0; sleep 0.5; done; echo "port $1 did not open" >&2; return 1; }

if ! open 5432; then
  command -v pg_ctlcluster >/dev/null || need postgresql postgresql-client
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$ver" ] || { echo "no PostgreSQL cluster found" >&2; exit 1; }
  conf="/etc/postgresql/$ver/main/pg_hba.conf"
  grep -q "ccc-trust" "$conf" || printf '# ccc-trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n' | $SUDO tee "$conf.new" >/dev/null && $SUDO sh -c "cat $conf >> $conf.new && mv $conf.new $conf"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  wait_port 5432
fi
if ! open 3306; then
  command -v mariadbd >/dev/null || need mariadb-server mariadb-client
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port 3306
fi
if ! open 6379; then
  command -v redis-server >/dev/null || need redis-server
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379
fi
echo "databases: PostgreSQL :5432, MariaDB :3306, Redis :6379 answer"
