# shellcheck shell=bash
# Kafka for scripts/services.sh (sourced after lib.sh): a single-node KRaft broker assembled
# from Maven Central, PLAINTEXT on 29092 and SASL_PLAINTEXT (SCRAM-SHA-512 prism/prism) on 29093.

KAFKA_PORT=29092
KAFKA_SASL_PORT=29093
KAFKA_CONTROLLER_PORT=29094
KAFKA_VERSION=4.4.0
KAFKA_HEAP=${PRISM_KAFKA_HEAP:--Xms256m -Xmx768m}
KAFKA_START_TIMEOUT=${PRISM_KAFKA_START_TIMEOUT:-90}
KAFKA_DIR=$STATE/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_CONF=$KAFKA_DIR/config
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PID=$KAFKA_DIR/kafka.pid

kafka_java() {
  local j
  for j in "${PRISM_SERVICES_JAVA:-}" /usr/lib/jvm/java-17-openjdk-amd64/bin/java "$(command -v java 2>/dev/null || true)"; do
    [[ -n $j && -x $j ]] && {
      printf '%s\n' "$j"
      return 0
    }
  done
  return 1
}

# kafka_api_versions PORT: send a Kafka ApiVersions v0 request and expect a reply with
# correlation id 1 and error code 0. A real protocol check that needs no JVM (works on
# the SASL listener too: ApiVersions is allowed before authentication).
kafka_api_versions() {
  local port=$1 out
  # shellcheck disable=SC2016 # $0/$1 expand in the inner shell
  out=$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x12\x00\x12\x00\x00\x00\x00\x00\x01\x00\x08services" >&3
    head -c 10 <&3 | od -An -tx1 | tr -d " \n"
  ' "$HOST" "$port" 2>/dev/null) || return 1
  [[ ${out:8:12} == 000000010000 ]]
}

kafka_ok() { kafka_api_versions "$KAFKA_PORT" && kafka_api_versions "$KAFKA_SASL_PORT"; }

kafka_libs_ok() {
  [[ -f $KAFKA_LIBS/.complete && $(cat "$KAFKA_LIBS/.complete") == "$(cksum <"$ASSETS/kafka-pom.xml")" ]] &&
    compgen -G "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

kafka_fetch_libs() {
  kafka_libs_ok && return 0
  if ! command -v mvn >/dev/null 2>&1; then
    apt_install maven
  fi
  local logf=$LOGS/kafka-mvn.log tmp=$KAFKA_DIR/libs.tmp
  host_change "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS through Maven's local repository (~/.m2 unless settings.xml says otherwise; log $logf)"
  rm -rf "$tmp"
  if ! mvn -B -q -f "$ASSETS/kafka-pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$logf" 2>&1; then
    show_log "$logf"
    die "kafka: mvn dependency:copy-dependencies failed"
  fi
  cksum <"$ASSETS/kafka-pom.xml" >"$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
}

kafka_write_conf() {
  install -d -m 755 "$KAFKA_CONF" "$KAFKA_DATA"
  cat >"$KAFKA_CONF/server.properties" <<EOF
# Written by scripts/services.sh (regenerated on every start).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_PLAINTEXT://$HOST:$KAFKA_SASL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_prism="prism";
# SASL sessions end after 10s: clients re-authenticate (KIP-368) with the
# credentials they hold now, so a rotated SCRAM password is picked up without reconnecting, and
# an old password stops working on open connections too.
connections.max.reauth.ms=10000

log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
EOF
  cat >"$KAFKA_CONF/client-scram-sha-512.properties" <<'EOF'
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="prism" password="prism";
EOF
}

# kafka_tool MAINCLASS ARGS...: run a Kafka command-line tool from the downloaded jars.
kafka_tool() {
  local java
  java=$(kafka_java)
  "$java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ASSETS/kafka-log4j2.properties" -Dprism.kafka.loglevel=WARN \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  local logf=$LOGS/kafka-format.log cluster_id
  cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  log "kafka: formatting storage $KAFKA_DATA (cluster id $cluster_id, SCRAM users prism)"
  rm -rf "$KAFKA_DATA"
  install -d -m 755 "$KAFKA_DATA"
  # The id goes after '=': one random id in 64 starts with '-', which would read as an option.
  if ! kafka_tool kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$KAFKA_CONF/server.properties" \
    --add-scram 'SCRAM-SHA-512=[name=prism,password=prism]' \
    --add-scram 'SCRAM-SHA-256=[name=prism,password=prism]' >"$logf" 2>&1; then
    show_log "$logf"
    rm -rf "$KAFKA_DATA"
    die "kafka: StorageTool format failed"
  fi
}

kafka_start() {
  if skipped kafka; then
    log "kafka: skipped (PRISM_SERVICES_SKIP)"
    return 0
  fi
  if kafka_ok; then
    log "kafka: up on $HOST:$KAFKA_PORT (PLAINTEXT) and $HOST:$KAFKA_SASL_PORT (SASL_PLAINTEXT)"
    return 0
  fi
  local logf=$LOGS/kafka.log
  if pid_matches "$KAFKA_PID" kafka.Kafka; then
    log "kafka: process $(head -n1 "$KAFKA_PID") is running but not answering yet, waiting"
    if ! wait_until 60 kafka_ok; then
      warn "kafka: no answer, restarting it"
      kill_pidfile "$KAFKA_PID" kafka.Kafka kafka 30
    fi
  fi
  if ! kafka_ok; then
    local p
    for p in "$KAFKA_PORT" "$KAFKA_SASL_PORT" "$KAFKA_CONTROLLER_PORT"; do
      if port_open "$p"; then
        die "kafka: port $p is in use by another process; stop it (ss -ltnp 'sport = :$p') or set PRISM_SERVICES_SKIP=kafka"
      fi
    done
    local java
    if ! java=$(kafka_java); then
      apt_install openjdk-17-jre-headless
      java=$(kafka_java) || die "kafka: no java after installing openjdk-17-jre-headless"
    fi
    kafka_fetch_libs
    kafka_write_conf
    kafka_format
    [[ ! -f $logf ]] || mv -f "$logf" "$logf.1"
    log "kafka: starting broker $KAFKA_VERSION (KRaft) with $java (log $logf)"
    # shellcheck disable=SC2086 # KAFKA_HEAP holds several JVM flags
    setsid nohup "$java" $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$ASSETS/kafka-log4j2.properties" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF/server.properties" \
      </dev/null >"$logf" 2>&1 &
    echo $! >"$KAFKA_PID"
    local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    until kafka_ok; do
      if ! pid_matches "$KAFKA_PID" kafka.Kafka; then
        show_log "$logf" 60
        die "kafka: broker exited during startup"
      fi
      if ((SECONDS >= deadline)); then
        show_log "$logf" 60
        die "kafka: broker did not answer on ports $KAFKA_PORT and $KAFKA_SASL_PORT within ${KAFKA_START_TIMEOUT}s"
      fi
      sleep 0.5
    done
  fi
  # A real client round trip on both listeners (AdminClient via TopicCommand --list).
  local checklog=$LOGS/kafka-check.log
  if ! kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" --list >"$checklog" 2>&1; then
    show_log "$checklog"
    show_log "$logf"
    die "kafka: listing topics on PLAINTEXT $HOST:$KAFKA_PORT failed"
  fi
  if ! kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_SASL_PORT" \
    --command-config "$KAFKA_CONF/client-scram-sha-512.properties" --list >>"$checklog" 2>&1; then
    show_log "$checklog"
    show_log "$logf"
    die "kafka: listing topics over SASL_PLAINTEXT/SCRAM-SHA-512 on $HOST:$KAFKA_SASL_PORT as prism failed"
  fi
  log "kafka: up on $HOST:$KAFKA_PORT (PLAINTEXT) and $HOST:$KAFKA_SASL_PORT (SASL_PLAINTEXT, SCRAM-SHA-512 prism/prism)"
}

kafka_stop() {
  kill_pidfile "$KAFKA_PID" kafka.Kafka kafka 45
}

# kafka_status: one status line; fails when the broker does not answer on both listeners.
kafka_status() {
  if skipped kafka; then
    printf '%-14s skipped\n' kafka
  elif kafka_ok; then
    local pid=""
    pid_matches "$KAFKA_PID" kafka.Kafka && pid=" (pid $(head -n1 "$KAFKA_PID"))"
    printf '%-14s up    %s:%s PLAINTEXT, %s:%s SASL_PLAINTEXT%s\n' kafka "$HOST" "$KAFKA_PORT" "$HOST" "$KAFKA_SASL_PORT" "$pid"
  else
    printf '%-14s DOWN  (%s)\n' kafka "$LOGS/kafka.log"
    return 1
  fi
}

kafka_endpoints() {
  skipped kafka || printf '  Kafka       PLAINTEXT %s:%s, SASL_PLAINTEXT %s:%s (SCRAM-SHA-512/SCRAM-SHA-256/PLAIN prism/prism)\n' "$HOST" "$KAFKA_PORT" "$HOST" "$KAFKA_SASL_PORT"
}
