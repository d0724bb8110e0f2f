#!/bin/sh
# Two "hosts" on this machine for the multi-host MPI test (tests/train/dist_mpirun_test.cpp):
# network namespaces TAG1 and TAG2 joined by a bridge TAGb, addresses NET.2 and NET.3 (the
# bridge NET.1, where mpirun listens). mpirun starts its daemons through `agent`, OpenMPI's rsh
# launcher hook (--mca plm_rsh_agent): the rank processes then talk over TCP across the
# namespaces, the same path as between machines.
#   netns_hosts.sh up TAG NET     e.g. up aji123 10.231.7  (needs root: ip netns, veth, bridge)
#   netns_hosts.sh down TAG
#   netns_hosts.sh agent HOST CMD...   (called by mpirun; AJI_NETNS_TAG names the namespaces,
#                                       AJI_NETNS_LOG, if set, gets one line per launch)
set -u
case "${1:-}" in
  up)
    tag=$2 net=$3
    set -e
    ip netns add "${tag}1"
    ip netns add "${tag}2"
    ip link add "${tag}b" type bridge
    ip addr add "$net.1/24" dev "${tag}b"
    ip link set "${tag}b" up
    for i in 1 2; do
      ip link add "${tag}v$i" type veth peer name "${tag}p$i"
      ip link set "${tag}v$i" master "${tag}b"
      ip link set "${tag}v$i" up
      ip link set "${tag}p$i" netns "${tag}$i"
      ip netns exec "${tag}$i" ip addr add "$net.$((i + 1))/24" dev "${tag}p$i"
      ip netns exec "${tag}$i" ip link set "${tag}p$i" up
      ip netns exec "${tag}$i" ip link set lo up
    done
    # The "hosts" must reach each other over the bridge (a firewall on bridged traffic would
    # make every launch hang): one TCP connection from the first to the second (python3).
    if command -v python3 > /dev/null 2>&1; then
      set +e
      ip netns exec "${tag}2" timeout 8 python3 -c "import socket; s = socket.socket(); s.bind(('$net.3', 47911)); s.listen(1); s.accept()" &
      srv=$!
      ok=1
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        sleep 0.3
        if ip netns exec "${tag}1" timeout 3 python3 -c "import socket; socket.create_connection(('$net.3', 47911), 2)" 2>/dev/null; then
          ok=0
          break
        fi
      done
      kill "$srv" 2>/dev/null
      wait "$srv" 2>/dev/null
      if [ "$ok" != 0 ]; then
        echo "the two network namespaces cannot reach each other over the bridge (TCP $net.2 -> $net.3)" >&2
        exit 1
      fi
    fi
    ;;
  down)
    tag=$2
    ip link del "${tag}b" 2>/dev/null
    for i in 1 2; do
      ip link del "${tag}v$i" 2>/dev/null
      ip netns del "${tag}$i" 2>/dev/null
      rm -rf "/tmp/${tag}$i.tmp"
    done
    true
    ;;
  agent)
    host=$2
    shift 2
    i=$((${host##*.} - 1))  # NET.2 -> namespace 1, NET.3 -> 2
    [ -n "${AJI_NETNS_LOG:-}" ] && echo "launch on $host in ${AJI_NETNS_TAG}$i" >> "$AJI_NETNS_LOG"
    # The two "hosts" share one file system and one host name: each daemon gets its own
    # TMPDIR, or OpenMPI's session directories (/tmp/ompi.HOST.UID/...) collide between them.
    TMPDIR="/tmp/${AJI_NETNS_TAG}$i.tmp"
    mkdir -p "$TMPDIR"
    export TMPDIR
    exec ip netns exec "${AJI_NETNS_TAG}$i" sh -c "$*"
    ;;
  *)
    echo "usage: netns_hosts.sh up TAG NET | down TAG | agent HOST CMD..." >&2
    exit 2
    ;;
esac
