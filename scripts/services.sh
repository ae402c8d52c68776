# Sourced by scripts/test (and usable by hand): installs RabbitMQ and
# PostgreSQL from the system packages when missing, starts them without
# systemd, waits until they accept connections, and exports
# TEST_DATABASE_URL and TEST_AMQP_URL for the test suite. Both also take TLS
# (PostgreSQL on its port, RabbitMQ on TEST_AMQPS_URL) with a certificate
# from a private test CA, TEST_TLS_CA_FILE.
#
# PostgreSQL runs as a private cluster in $MALLBOTS_PG_DIR on
# $MALLBOTS_PG_PORT, and RabbitMQ as a private node in $MALLBOTS_RABBIT_DIR
# on $MALLBOTS_AMQP_PORT (and the next port for Erlang distribution; not in
# 35672-35682, which the CLI tools take): neither
# touches a system server. Tests isolate themselves with a name prefix each.

MALLBOTS_PG_PORT=${MALLBOTS_PG_PORT:-55432}
MALLBOTS_PG_DIR=${MALLBOTS_PG_DIR:-/tmp/mallbots-test-pg}
MALLBOTS_AMQP_PORT=${MALLBOTS_AMQP_PORT:-5682}
MALLBOTS_RABBIT_DIR=${MALLBOTS_RABBIT_DIR:-/tmp/mallbots-test-rabbit}
MALLBOTS_RABBIT_NODE=${MALLBOTS_RABBIT_NODE:-mallbots-test@localhost}
MALLBOTS_TLS_DIR=${MALLBOTS_TLS_DIR:-/tmp/mallbots-test-tls}

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
  # Validates docker-compose.yml (no Docker engine needed).
  command -v docker-compose >/dev/null || apt_install docker-compose
}

# A private CA, and a certificate for 127.0.0.1 and localhost signed by it
# for the services' TLS; made once, kept in $MALLBOTS_TLS_DIR.
make_test_certificates() {
  local dir=$MALLBOTS_TLS_DIR
  if [ ! -f "$dir/server.pem" ]; then
    command -v openssl >/dev/null || apt_install openssl
    log "making a test CA and a server certificate in $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=MallBots test CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 3650 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null ||
      die "could not make the test certificates"
  fi
  chmod 755 "$dir"
  chmod 644 "$dir/ca.pem" "$dir/server.pem"
  export TEST_TLS_CA_FILE="$dir/ca.pem"
}

# Copies the server certificate and key into $1 for the service's user $2
# (the key readable by it alone, as PostgreSQL requires).
install_server_certificate() {
  cp "$MALLBOTS_TLS_DIR/server.pem" "$MALLBOTS_TLS_DIR/ca.pem" "$MALLBOTS_TLS_DIR/server.key" "$1/"
  chmod 600 "$1/server.key"
  if [ "$(id -u)" -eq 0 ]; then chown "$2:$2" "$1/server.pem" "$1/ca.pem" "$1/server.key"; fi
}

# pg_ctl start|stop on the cluster in $MALLBOTS_PG_DIR, as its owner.
pg_control() {
  local bin; bin=$(pg_bin)
  local run_as=()
  if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
  # Idempotent: starting a running cluster or stopping a stopped one is done.
  local running=false
  "${run_as[@]}" "$bin/pg_ctl" -D "$MALLBOTS_PG_DIR/data" status >/dev/null 2>&1 && running=true
  case "$1" in
    start)
      $running && return 0
      "${run_as[@]}" "$bin/pg_ctl" -D "$MALLBOTS_PG_DIR/data" -l "$MALLBOTS_PG_DIR/log" -w \
        -o "-p $MALLBOTS_PG_PORT -k $MALLBOTS_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" \
        start >/dev/null || { tail -n 30 "$MALLBOTS_PG_DIR/log" >&2; die "PostgreSQL did not start"; }
      ;;
    stop) $running || return 0
      "${run_as[@]}" "$bin/pg_ctl" -D "$MALLBOTS_PG_DIR/data" -w -m fast stop >/dev/null ;;
  esac
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
      if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$MALLBOTS_PG_DIR"; fi
      "${run_as[@]}" "$bin/initdb" -D "$MALLBOTS_PG_DIR/data" -U postgres -A trust >/dev/null
    fi
    # A server killed without shutdown leaves its lock files; while that pid
    # is a zombie not yet reaped, or once it is reused by another process,
    # PostgreSQL refuses to start.
    local lock pid
    for lock in "$MALLBOTS_PG_DIR/data/postmaster.pid" "$MALLBOTS_PG_DIR/.s.PGSQL.$MALLBOTS_PG_PORT.lock"; do
      [ -f "$lock" ] || continue
      pid=$(head -n 1 "$lock")
      if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != postgres ] ||
        [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
        rm -f "$lock"
      fi
    done
    log "starting PostgreSQL on 127.0.0.1:$MALLBOTS_PG_PORT"
    pg_control start
  fi
  for _ in $(seq 1 60); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT" && break
    sleep 0.5
  done
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT" || die "PostgreSQL is not accepting connections"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$MALLBOTS_PG_PORT/postgres"
  local psql=("$bin/psql" -q -h 127.0.0.1 -p "$MALLBOTS_PG_PORT" -U postgres -d postgres -At)
  # TLS beside plain connections. A reload turns it on in a running
  # cluster too; ALTER SYSTEM keeps it for the fault tests' restarts.
  install_server_certificate "$MALLBOTS_PG_DIR" postgres
  "${psql[@]}" -c "ALTER SYSTEM SET ssl_cert_file = '$MALLBOTS_PG_DIR/server.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$MALLBOTS_PG_DIR/server.key'" \
    -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null ||
    die "could not turn on TLS in PostgreSQL"
  # Each test makes a database of its own; drop those earlier runs left.
  "${psql[@]}" -c "SELECT datname FROM pg_database WHERE datname LIKE 'mallbots\_test\_%' OR datname LIKE 'platform\_%'" |
    while read -r db; do "${psql[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
}

# RabbitMQ also runs as a private node, its data in $MALLBOTS_RABBIT_DIR, wiped
# at every fresh start: a node restarted on old data must recover every durable
# queue earlier runs left (thousands), which can take longer than the run.
rabbit() {
  local limit=()
  if [ "$1" = --within ]; then limit=(timeout "$2"); shift 2; fi
  local tool=$1; shift
  local env=(env HOME="$MALLBOTS_RABBIT_DIR"
    RABBITMQ_CONF_ENV_FILE="$MALLBOTS_RABBIT_DIR/rabbitmq-env.conf"
    RABBITMQ_CONFIG_FILE="$MALLBOTS_RABBIT_DIR/rabbitmq"
    RABBITMQ_ADVANCED_CONFIG_FILE="$MALLBOTS_RABBIT_DIR/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$MALLBOTS_RABBIT_DIR/enabled_plugins"
    RABBITMQ_NODENAME="$MALLBOTS_RABBIT_NODE"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$MALLBOTS_AMQP_PORT"
    RABBITMQ_DIST_PORT="$((MALLBOTS_AMQP_PORT + 1))"
    RABBITMQ_MNESIA_BASE="$MALLBOTS_RABBIT_DIR/mnesia"
    RABBITMQ_LOG_BASE="$MALLBOTS_RABBIT_DIR/log")
  if [ "$(id -u)" -eq 0 ]; then
    "${limit[@]}" runuser -u rabbitmq -- "${env[@]}" "/usr/lib/rabbitmq/bin/$tool" "$@"
  else
    "${limit[@]}" "${env[@]}" "/usr/lib/rabbitmq/bin/$tool" "$@"
  fi
}

# Bounded: await_startup on a node still booting can block for as long as
# the boot takes.
rabbit_up() { rabbit --within 10 rabbitmqctl -q await_startup >/dev/null 2>&1; }

# Whether something accepts connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_rabbitmq() {
  local tls_port=$((MALLBOTS_AMQP_PORT + 2))
  # A node started before it had a TLS listener gets one by starting anew.
  if rabbit_up && ! port_open "$tls_port"; then
    log "RabbitMQ on $MALLBOTS_AMQP_PORT has no TLS listener: restarting it"
    rabbit --within 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
  fi
  if rabbit_up; then
    # Leftover queues of earlier runs would pile up: start from none.
    log "RabbitMQ already up on $MALLBOTS_AMQP_PORT: resetting it"
    rabbit --within 60 rabbitmqctl -q stop_app >/dev/null &&
      rabbit --within 60 rabbitmqctl -q reset >/dev/null &&
      rabbit --within 60 rabbitmqctl -q start_app >/dev/null ||
      die "could not reset the RabbitMQ node $MALLBOTS_RABBIT_NODE"
  else
    log "starting a private RabbitMQ node on 127.0.0.1:$MALLBOTS_AMQP_PORT"
    # A node of ours that is there but not answering goes before its data.
    local pid_file="$MALLBOTS_RABBIT_DIR/mnesia/$MALLBOTS_RABBIT_NODE.pid"
    if [ -f "$pid_file" ]; then kill -9 "$(cat "$pid_file")" 2>/dev/null || true; fi
    rm -rf "$MALLBOTS_RABBIT_DIR"
    mkdir -p "$MALLBOTS_RABBIT_DIR/log"
    install_server_certificate "$MALLBOTS_RABBIT_DIR" rabbitmq
    cat >"$MALLBOTS_RABBIT_DIR/rabbitmq.conf" <<CONF
listeners.ssl.1 = 127.0.0.1:$tls_port
ssl_options.cacertfile = $MALLBOTS_RABBIT_DIR/ca.pem
ssl_options.certfile = $MALLBOTS_RABBIT_DIR/server.pem
ssl_options.keyfile = $MALLBOTS_RABBIT_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
    if [ "$(id -u)" -eq 0 ]; then chown -R rabbitmq:rabbitmq "$MALLBOTS_RABBIT_DIR"; fi
    (ulimit -n 65536 2>/dev/null; rabbit rabbitmq-server -detached >/dev/null 2>&1) || true
    local deadline=$((SECONDS + 90))
    until rabbit_up; do
      if [ $SECONDS -ge $deadline ]; then
        tail -n 20 "$MALLBOTS_RABBIT_DIR"/log/*.log >&2 2>/dev/null
        die "RabbitMQ did not start within 90 s (logs in $MALLBOTS_RABBIT_DIR/log)"
      fi
      sleep 1
    done
  fi
  export TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$MALLBOTS_AMQP_PORT/%2f"
}

# A second private node, only for the tests that stop and start the broker
# (the fault tests): the other tests share the first one and must not see it
# go away. TEST_FAULT_RABBIT_CTL is the command those tests call:
# `scripts/fault-rabbit stop|start`.
MALLBOTS_FAULT_AMQP_PORT=${MALLBOTS_FAULT_AMQP_PORT:-5692}
MALLBOTS_FAULT_RABBIT_DIR=${MALLBOTS_FAULT_RABBIT_DIR:-/tmp/mallbots-fault-rabbit}
MALLBOTS_FAULT_RABBIT_NODE=${MALLBOTS_FAULT_RABBIT_NODE:-mallbots-fault@localhost}

# Runs "$@" with the fault node's settings in place of the shared node's.
as_fault_node() {
  local MALLBOTS_AMQP_PORT=$MALLBOTS_FAULT_AMQP_PORT
  local MALLBOTS_RABBIT_DIR=$MALLBOTS_FAULT_RABBIT_DIR
  local MALLBOTS_RABBIT_NODE=$MALLBOTS_FAULT_RABBIT_NODE
  "$@"
}

# And a second private PostgreSQL cluster, for the tests that stop the
# database (scripts/fault-postgres stop|start, TEST_FAULT_POSTGRES_CTL).
MALLBOTS_FAULT_PG_PORT=${MALLBOTS_FAULT_PG_PORT:-55433}
MALLBOTS_FAULT_PG_DIR=${MALLBOTS_FAULT_PG_DIR:-/tmp/mallbots-fault-pg}

as_fault_postgres() {
  local MALLBOTS_PG_PORT=$MALLBOTS_FAULT_PG_PORT
  local MALLBOTS_PG_DIR=$MALLBOTS_FAULT_PG_DIR
  "$@"
}

# Starts a fault service ($1: as_fault_postgres or as_fault_node, $2: its
# start function) and exports its URL as TEST_FAULT_$3 (DATABASE_URL or
# AMQP_URL), leaving the shared service's TEST_$3 as it was, and the path of
# its control script ($4, in scripts/) as $5.
start_fault_service() {
  local as=$1 start=$2 var=$3 script=$4 ctl_var=$5
  local url_var="TEST_$var" shared_url
  shared_url=${!url_var}
  "$as" "$start"
  export "TEST_FAULT_$var=${!url_var}"
  export "$url_var=$shared_url"
  export "$ctl_var=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$script"
}

start_fault_postgres() {
  start_fault_service as_fault_postgres start_postgres DATABASE_URL fault-postgres TEST_FAULT_POSTGRES_CTL
}

start_fault_rabbitmq() {
  start_fault_service as_fault_node start_rabbitmq AMQP_URL fault-rabbit TEST_FAULT_RABBIT_CTL
}

start_services() {
  ensure_packages
  make_test_certificates
  start_postgres
  start_rabbitmq
  export TEST_AMQPS_URL="amqps://guest:guest@127.0.0.1:$((MALLBOTS_AMQP_PORT + 2))/%2f"
  # The plain URLs stay plain: with PostgreSQL's default sslmode (prefer)
  # every connection would take TLS, a handshake of about 10 ms in a debug
  # build, and the tests' start-ups open hundreds of connections. The TLS
  # tests say sslmode in their URLs.
  export PGSSLMODE=disable
  start_fault_postgres
  start_fault_rabbitmq
  log "services ready: $TEST_DATABASE_URL, $TEST_AMQP_URL, $TEST_AMQPS_URL (fault tests: $TEST_FAULT_DATABASE_URL, $TEST_FAULT_AMQP_URL)"
}
