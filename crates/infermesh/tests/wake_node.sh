#!/bin/sh
# A provider wake hook for the wakeable test: "wakes" a machine by starting a real infermesh node
# in the background that joins the mesh under the expected name, as a real provider's boot would.
# Usage: wake_node.sh INFERMESH_BINARY STATE_DIR   (env from the node: INFERMESH_JOIN,
# INFERMESH_NODE_NAME, INFERMESH_WAKEABLE_ID)
set -eu
bin="$1"
dir="$2"
mkdir -p "$dir/data"
echo "provider: powering on $INFERMESH_WAKEABLE_ID as $INFERMESH_NODE_NAME"
INFERMESH_ADMIN_OPEN=0 "$bin" up --client --port 0 --gossip-port 0 --name "$INFERMESH_NODE_NAME" \
  --join "$INFERMESH_JOIN" --data-dir "$dir/data" >"$dir/out.log" 2>"$dir/err.log" </dev/null &
echo $! >"$dir/pid"
echo "provider: machine booting (pid $!)"
