# Sourced by scripts/test (and usable by hand): installs RabbitMQ and
# PostgreSQL from the system packages when missing, starts them without
# systemd, waits until they accept connections, and exports
# TEST_DATABASE_URL and TEST_AMQP_URL for the test suite.
#
# PostgreSQL runs as a private cluster in $MALLBOTS_PG_DIR on
# $MALLBOTS_PG_PORT (it touches no system cluster); RabbitMQ is the system
# node on 5672 (tests isolate themselves with a name prefix per test).

MALLBOTS_PG_PORT=${MALLBOTS_PG_PORT:-55432}
MALLBOTS_PG_DIR=${MALLBOTS_PG_DIR:-/tmp/mallbots-test-pg}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "$* missing and this is not a Debian/Ubuntu machine: install $* yourself"
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_packages() {
  command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || apt_install postgresql
  command -v npm >/dev/null || apt_install npm
}

start_postgres() {
  local bin; bin=$(pg_bin)
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT"; then
    log "PostgreSQL already up on $MALLBOTS_PG_PORT"
  else
    local run_as=()
    if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
    if [ ! -f "$MALLBOTS_PG_DIR/data/PG_VERSION" ]; then
      log "creating a private PostgreSQL cluster in $MALLBOTS_PG_DIR"
      rm -rf "$MALLBOTS_PG_DIR"
      mkdir -p "$MALLBOTS_PG_DIR"
      [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$MALLBOTS_PG_DIR"
      "${run_as[@]}" "$bin/initdb" -D "$MALLBOTS_PG_DIR/data" -U postgres -A trust >/dev/null
    fi
    log "starting PostgreSQL on 127.0.0.1:$MALLBOTS_PG_PORT"
    "${run_as[@]}" "$bin/pg_ctl" -D "$MALLBOTS_PG_DIR/data" -l "$MALLBOTS_PG_DIR/log" -w \
      -o "-p $MALLBOTS_PG_PORT -k $MALLBOTS_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" \
      start >/dev/null || { cat "$MALLBOTS_PG_DIR/log" >&2; die "PostgreSQL did not start"; }
  fi
  for _ in $(seq 1 60); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT" && break
    sleep 0.5
  done
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT" || die "PostgreSQL is not accepting connections"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$MALLBOTS_PG_PORT/postgres"
  # Each test makes a database of its own; drop those earlier runs left.
  local psql=("$bin/psql" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT" -U postgres -d postgres -At)
  "${psql[@]}" -c "SELECT datname FROM pg_database WHERE datname LIKE 'mallbots\_test\_%' OR datname LIKE 'platform\_%'" |
    while read -r db; do "${psql[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
}

rabbit_up() { rabbitmqctl -q await_startup >/dev/null 2>&1; }

start_rabbitmq() {
  if rabbit_up; then
    log "RabbitMQ already up"
  else
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 90))
    until rabbit_up; do
      [ $SECONDS -lt $deadline ] || die "RabbitMQ did not start within 90 s (see /var/log/rabbitmq)"
      sleep 1
    done
  fi
  export TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
}

start_services() {
  ensure_packages
  start_postgres
  start_rabbitmq
  log "services ready: $TEST_DATABASE_URL, $TEST_AMQP_URL"
}
