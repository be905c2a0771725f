# Sourced by demo.sh and bench.sh: starts a master and an agent
# (--containerizers=rust,docker) on loopback and stops them on exit. Ended
# docker containers are removed at once (--docker_remove_delay=0secs): the
# agent's delayed removals do not outlive it, and its work dir goes with it.
# Usage: start_cluster BIN_DIR MASTER_PORT AGENT_PORT
# Leaves the master's address in $master and the work directory in $work.
pids=()
work=$(mktemp -d /tmp/mezzo-cluster.XXXXXX)
agent_pid=
stop_cluster() {
  # SIGUSR1: the agent kills every task and removes every container before it
  # exits (SIGTERM would leave checkpointing frameworks' executors running).
  if [ -n "$agent_pid" ] && kill -USR1 "$agent_pid" 2>/dev/null; then
    for _ in $(seq 1 200); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop_cluster EXIT
start_cluster() {
  local bin=$1 mport=$2 aport=$3
  master="127.0.0.1:$mport"
  "$bin/mezzo-master" --ip=127.0.0.1 --port="$mport" >"$work/master.log" 2>&1 &
  pids+=($!)
  "$bin/mezzo-agent" --master="$master" --ip=127.0.0.1 --port="$aport" --work_dir="$work/agent" \
    --containerizers=rust,docker --docker_registry="$PWD/target/test-images" \
    --docker_remove_delay=0secs >"$work/agent.log" 2>&1 &
  agent_pid=$!
  pids+=($agent_pid)
  for _ in $(seq 1 100); do
    curl -fsS "http://$master/state" 2>/dev/null | grep -q '"hostname"' && return 0
    sleep 0.1
  done
  echo "cluster did not come up; agent log:"; tail -20 "$work/agent.log"; return 1
}
