#!/usr/bin/env bash
# Build the real upstream binaries the cluster lab runs, from the Go module
# proxy, and cache them by component+version outside the repository:
#
#   ${CLUSTERDNS_LAB_CACHE:-/var/cache/clusterdns-doctor/lab}/bin/<name>-<version>
#
# Already-cached binaries are skipped, so a warm run takes well under a second.
# Usage: tests/lab/build.sh [all|etcd|k8s|coredns|node-cache] ...
#        tests/lab/build.sh --list      # print the binary paths labctl uses
# Env:   GO (default: go on PATH, else /usr/local/go/bin/go)
#        LAB_BUILD_JOBS (go build -p, default: nproc)
set -euo pipefail
shopt -s inherit_errexit

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CLUSTERDNS_LAB_CACHE:-/var/cache/clusterdns-doctor/lab}"
BIN="$CACHE/bin"
WORK="$CACHE/work"
LOGS="$CACHE/logs"

# Versions: keep in sync with tests/lab/wrappers/*/go.mod and labctl.
ETCD_VERSION=v3.6.16
K8S_VERSION=v1.34.4
COREDNS_VERSION="${CLUSTERDNS_LAB_COREDNS_VERSION:-v1.12.4}"   # override for CDNS003/CDNS004 (docs/lab.md)
NODECACHE_VERSION=v0.0.0-20230331134350-76795c66ba55   # k8s.io/dns, CoreDNS 1.10.0 inside

if [[ -z "${GO:-}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"; else GO=/usr/local/go/bin/go; fi
fi
export GOTOOLCHAIN=local GOFLAGS=-trimpath CGO_ENABLED=0
JOBS="${LAB_BUILD_JOBS:-$(nproc)}"

say() { printf '[lab-build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# heartbeat WHAT PID: wait for a background step, saying every LAB_BUILD_HEARTBEAT seconds
# (default 60) that it still runs, so that a 10-minute compile does not look like a hang.
# Returns the step's exit status.
heartbeat() {
  local what="$1" pid="$2" t0=$SECONDS n=0 every="${LAB_BUILD_HEARTBEAT:-60}"
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    n=$((n + 1))
    if ((n % every == 0)) && kill -0 "$pid" 2>/dev/null; then say "$what: still compiling ($((SECONDS - t0)) s)"; fi
  done
  wait "$pid"
}

have() { [[ -x "$BIN/$1" ]]; }

list() {
  echo "$BIN/etcd-$ETCD_VERSION"
  echo "$BIN/etcdctl-$ETCD_VERSION"
  echo "$BIN/kube-apiserver-$K8S_VERSION"
  echo "$BIN/kube-proxy-$K8S_VERSION"
  echo "$BIN/coredns-$COREDNS_VERSION"
  echo "$BIN/node-cache-$NODECACHE_VERSION"
}

# Copy a wrapper module to a scratch dir in the cache and resolve go.sum there.
prep_wrapper() {
  local name="$1" dir="$WORK/$1"
  mkdir -p "$dir"
  cp "$HERE/wrappers/$name/go.mod" "$HERE/wrappers/$name/tools.go" "$dir/"
  if [[ -f "$HERE/wrappers/$name/go.sum" ]]; then cp "$HERE/wrappers/$name/go.sum" "$dir/"; fi
  if [[ "$name" != node-cache ]]; then
    say "$name: resolving modules (go mod tidy)"
    (cd "$dir" && "$GO" mod tidy) || return 1
  fi
  echo "$dir"
}

build_etcd() {
  if have "etcd-$ETCD_VERSION" && have "etcdctl-$ETCD_VERSION"; then say "etcd $ETCD_VERSION cached"; return; fi
  local dir t0=$SECONDS
  dir="$(prep_wrapper etcd)"
  say "etcd $ETCD_VERSION: compiling etcd + etcdctl"
  (cd "$dir" && "$GO" build -p "$JOBS" -ldflags '-s -w' -o "$BIN/.etcd.tmp" go.etcd.io/etcd/server/v3 \
     && "$GO" build -p "$JOBS" -ldflags '-s -w' -o "$BIN/.etcdctl.tmp" go.etcd.io/etcd/etcdctl/v3) &
  heartbeat "etcd $ETCD_VERSION" $!
  mv "$BIN/.etcd.tmp" "$BIN/etcd-$ETCD_VERSION"
  mv "$BIN/.etcdctl.tmp" "$BIN/etcdctl-$ETCD_VERSION"
  say "etcd $ETCD_VERSION: done in $((SECONDS - t0)) s"
}

build_k8s() {
  if have "kube-apiserver-$K8S_VERSION" && have "kube-proxy-$K8S_VERSION"; then say "k8s $K8S_VERSION cached"; return; fi
  local dir t0=$SECONDS minor
  dir="$(prep_wrapper k8s)"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local ldf="-s -w"
  ldf+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldf+=" -X k8s.io/component-base/version.gitMajor=1"
  ldf+=" -X k8s.io/component-base/version.gitMinor=$minor"
  ldf+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldf+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for cmd in kube-apiserver kube-proxy; do
    if have "$cmd-$K8S_VERSION"; then say "$cmd cached"; continue; fi
    say "$cmd $K8S_VERSION: compiling (cold: 10-25 min on 2 cores)"
    (cd "$dir" && "$GO" build -p "$JOBS" -ldflags "$ldf" -o "$BIN/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") &
    heartbeat "$cmd $K8S_VERSION" $!
    mv "$BIN/.$cmd.tmp" "$BIN/$cmd-$K8S_VERSION"
  done
  say "k8s $K8S_VERSION: done in $((SECONDS - t0)) s"
}

# go install into a scratch GOBIN, then move into the versioned cache name.
go_install() {
  local name="$1" pkg="$2" ver="$3" ldf="$4" gobin="$WORK/gobin-$1"
  mkdir -p "$gobin"
  GOBIN="$gobin" "$GO" install -p "$JOBS" -ldflags "$ldf" "$pkg@$ver" &
  heartbeat "$name $ver" $!
  mv "$gobin/$name" "$BIN/$name-$ver"
  rmdir "$gobin" 2>/dev/null || true
}

build_coredns() {
  if have "coredns-$COREDNS_VERSION"; then say "coredns $COREDNS_VERSION cached"; return; fi
  local t0=$SECONDS
  say "coredns $COREDNS_VERSION: go install (cold: 2.5-4.5 min on 2 cores)"
  go_install coredns github.com/coredns/coredns "$COREDNS_VERSION" "-s -w"
  say "coredns: done in $((SECONDS - t0)) s"
}

build_nodecache() {
  if have "node-cache-$NODECACHE_VERSION"; then say "node-cache $NODECACHE_VERSION cached"; return; fi
  local dir t0=$SECONDS
  dir="$(prep_wrapper node-cache)"
  say "node-cache $NODECACHE_VERSION: compiling (cold: 3-10 min)"
  # Not `go mod tidy`: tidy walks the whole old module graph and needs inet.af/netaddr, which the
  # proxy refuses (403); -mod=mod loads only what node-cache imports.  k8s.io/dns pseudo-versions
  # are not in sum.golang.org (lookup 404), so for that one module the hash in
  # wrappers/node-cache/go.sum (recorded at first download) is the reference.
  (cd "$dir" && GONOSUMDB=k8s.io/dns "$GO" build -mod=mod -p "$JOBS" -ldflags "-s -w -X k8s.io/dns/pkg/version.VERSION=$NODECACHE_VERSION" \
     -o "$BIN/.node-cache.tmp" k8s.io/dns/cmd/node-cache) &
  heartbeat "node-cache" $!
  mv "$BIN/.node-cache.tmp" "$BIN/node-cache-$NODECACHE_VERSION"
  say "node-cache: done in $((SECONDS - t0)) s"
}

main() {
  if [[ "${1:-}" == "--list" ]]; then list; return; fi
  mkdir -p "$BIN" "$WORK" "$LOGS"
  # One builder at a time per cache (a second caller waits).
  exec 9>"$CACHE/.build.lock"
  flock 9
  local targets=("$@")
  [[ ${#targets[@]} -eq 0 ]] && targets=(all)
  for t in "${targets[@]}"; do
    case "$t" in
      all) build_etcd; build_coredns; build_nodecache; build_k8s ;;
      etcd) build_etcd ;;
      k8s) build_k8s ;;
      coredns) build_coredns ;;
      node-cache) build_nodecache ;;
      *) echo "unknown target: $t" >&2; exit 2 ;;
    esac
  done
  say "all requested binaries present in $BIN"
}

main "$@"
