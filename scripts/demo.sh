#!/usr/bin/env bash
# make demo: a real 3-node Shoal cluster on this machine, each node in a network
# namespace of its own, driven with the machine's stock kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin/shoal
NAME=shoal-demo
DIR=${SHOAL_DEMO_DIR:-/tmp/shoal-demo}
export HOME=${DEMO_HOME:-$(mktemp -d)} # fresh kubectl discovery cache

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
lan() { "$BIN" local exec --name "$NAME" --dir "$DIR" -- "$@"; }

if [ "$(id -u)" != 0 ]; then echo "make demo needs root (network namespaces)"; exit 1; fi
"$BIN" local down --name "$NAME" --dir "$DIR" >/dev/null 2>&1 || true

say "Starting three nodes: n1 creates the cluster, n2 and n3 join with a token"
"$BIN" local up --name "$NAME" --dir "$DIR" --nodes 3

say "Members: gossip state and raft role of each node (joiners start as non-voters, then are promoted)"
for i in $(seq 1 50); do
  lan "$BIN" members --kubeconfig "$DIR/kubeconfig" | grep -q non-voter || break
  sleep 0.2
done
lan "$BIN" members --kubeconfig "$DIR/kubeconfig"

say "kubectl get nodes -o wide (stock kubectl, through node n1)"
lan kubectl get nodes -o wide

say "Write through n1, read through n3: one replicated store"
lan kubectl create configmap greeting --from-literal=message="hello from shoal"
N3=$("$BIN" local status --name "$NAME" --dir "$DIR" | awk '$1=="n3"{print $3}')
lan kubectl --server "https://$N3:6443" get configmap greeting -o jsonpath='{.data.message}{"\n"}'

say "kubectl apply, then apply a change"
cat <<'YAML' | lan kubectl apply -f -
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {mode: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: s3cret}
YAML
cat <<'YAML' | lan kubectl apply -f -
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {mode: green}
YAML
lan kubectl get configmaps

say "Kill the leader (kill -9) and keep writing through a survivor"
LEADER=$(lan "$BIN" members --kubeconfig "$DIR/kubeconfig" | awk '/leader/{print $1}')
echo "leader is $LEADER"
"$BIN" local kill "$LEADER" --name "$NAME" --dir "$DIR"
for n in n1 n2 n3; do [ "$n" != "$LEADER" ] && SURVIVOR=$n && break; done
SIP=$("$BIN" local status --name "$NAME" --dir "$DIR" | awk -v n="$SURVIVOR" '$1==n{print $3}')
for i in $(seq 1 50); do
  if lan kubectl --server "https://$SIP:6443" create configmap after-failover --from-literal=ok=yes 2>/dev/null; then break; fi
  sleep 0.2
done
lan kubectl --server "https://$SIP:6443" get configmap after-failover
"$BIN" local start "$LEADER" --wait --name "$NAME" --dir "$DIR"
lan "$BIN" members --kubeconfig "$DIR/kubeconfig"

say "Pods: build the echo image here (no registry), import it on n1 only, run it as a Deployment over the nodes"
IMAGES=$(mktemp -d)
go run ./examples/mkimages "$IMAGES" >/dev/null
lan "$BIN" image import "$IMAGES/echo.tar" --kubeconfig "$DIR/kubeconfig"
rm -rf "$IMAGES"
cat <<'YAML' | lan kubectl apply -f -
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
      - name: echo
        image: shoal.dev/echo:v1
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
YAML
echo "(the nodes without the image pull it from n1, peer to peer)"
lan kubectl rollout status deployment/echo --timeout=120s
lan kubectl get pods -o wide
lan kubectl get service echo
lan kubectl get endpointslices -l kubernetes.io/service-name=echo

say "Pods reach each other by pod IP across nodes (kubectl exec through n1)"
PODS=($(lan kubectl get pods -l app=echo -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}'))
IPS=$(lan kubectl get pods -l app=echo -o jsonpath='{range .items[*]}{.status.podIP}{" "}{end}')
lan kubectl exec "${PODS[2]}" -- sh -c "for ip in $IPS; do printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 \$ip 8080 | tail -n 1; done"

say "A client pod on n3 reaches the service by name: cluster DNS on its node, round robin in its node's nftables"
cat <<'YAML' | lan kubectl apply -f -
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: n3
  terminationGracePeriodSeconds: 0
  containers: [{name: client, image: shoal.dev/echo:v1, command: [sleep, "3600"]}]
YAML
lan kubectl wait --for=condition=Ready pod/client --timeout=60s
lan kubectl exec client -- nslookup echo.default.svc.cluster.local
lan kubectl exec client -- sh -c 'for i in 1 2 3 4 5 6; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 echo 80 | tail -n 1; done'

say "The same service from outside the cluster, on every node's address (NodePort)"
NP=$(lan kubectl get service echo -o jsonpath='{.spec.ports[0].nodePort}')
for n in n1 n2 n3; do
  IP=$("$BIN" local status --name "$NAME" --dir "$DIR" | awk -v n="$n" '$1==n{print $3}')
  printf '%s:%s -> ' "$IP" "$NP"
  lan sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 2 $IP $NP | tail -n 1"
done

say "kubectl logs and exec"
lan kubectl logs "${PODS[1]}"
lan kubectl exec "${PODS[0]}" -- sh -c 'echo "hello from $(hostname), pod IP $POD_IP"; cat /etc/resolv.conf'

say "RBAC: a user's certificate, then a RoleBinding; a pod calling the API with its service account"
lan "$BIN" kubeconfig --kubeconfig "$DIR/kubeconfig" --user alice --group devs > "$DIR/alice.kubeconfig"
echo "alice may list pods: $(lan kubectl --kubeconfig "$DIR/alice.kubeconfig" auth can-i list pods || true)"
lan kubectl create rolebinding devs-view --clusterrole=view --group=devs
echo "alice may list pods: $(lan kubectl --kubeconfig "$DIR/alice.kubeconfig" auth can-i list pods || true)"
echo "alice may delete pods: $(lan kubectl --kubeconfig "$DIR/alice.kubeconfig" auth can-i delete pods || true)"
echo "in-cluster call from ${PODS[0]} as system:serviceaccount:default:default: $(lan kubectl exec "${PODS[0]}" -- wget -qO- http://127.0.0.1:8080/kube)"
lan kubectl create rolebinding default-view --clusterrole=view --serviceaccount=default:default
for i in $(seq 1 20); do
  CODE=$(lan kubectl exec "${PODS[0]}" -- wget -qO- http://127.0.0.1:8080/kube)
  [ "$CODE" = 200 ] && break
  sleep 0.2
done
echo "in-cluster call after the RoleBinding: $CODE"

say "The cluster stays up. Try it:"
echo "  $BIN local exec --name $NAME --dir $DIR -- kubectl get nodes"
echo "  $BIN local down --name $NAME --dir $DIR     # remove everything"
