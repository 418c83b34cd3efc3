#!/usr/bin/env bash
# Started by `make run`: the demo upstream and certgate in front of it; Ctrl-C stops both.
set -u
VENV=$1 DEMO=$2 PORT=$3 UPSTREAM_PORT=$4
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  echo; echo "certgate demo stopped."
}
trap cleanup INT TERM EXIT
"$VENV/bin/certgate" demo-upstream --port "$UPSTREAM_PORT" >"$DEMO/upstream.log" 2>&1 &
pids+=($!)
"$VENV/bin/certgate" run --config "$DEMO/certgate.conf" >"$DEMO/certgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then echo "certgate failed to start:"; cat "$DEMO/certgate.log"; exit 1; fi
  sleep 0.1
done
cat <<MSG

certgate is running on https://localhost:$PORT/ in front of a demo upstream (http://127.0.0.1:$UPSTREAM_PORT/).

  With alice's certificate (forwarded; the upstream sees X-Remote-User: alice):
    curl --cacert $DEMO/ca.pem --cert $DEMO/alice.pem --key $DEMO/alice.key https://localhost:$PORT/

  Without a certificate (refused in the TLS handshake):
    curl --cacert $DEMO/ca.pem https://localhost:$PORT/

  A forged identity header is replaced, never passed on:
    curl --cacert $DEMO/ca.pem --cert $DEMO/alice.pem --key $DEMO/alice.key -H 'X-Remote-User: root' https://localhost:$PORT/

  In a browser: import $DEMO/alice.p12 (password: demo-password) into your certificate store
  (Chrome/Edge: Settings > Privacy and security > Security > Manage certificates > Import;
   Firefox: Settings > Privacy & Security > Certificates > View Certificates > Your Certificates > Import),
  trust $DEMO/ca.pem as an authority, then open https://localhost:$PORT/ and pick "alice".

  Logs: $DEMO/certgate.log, $DEMO/audit.log.   Trust store: $VENV/bin/certgate trust list --config $DEMO/certgate.conf
Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
echo "a demo process exited; see $DEMO/certgate.log and $DEMO/upstream.log"
