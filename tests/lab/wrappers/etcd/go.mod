// Wrapper module for building etcd + etcdctl from the Go module proxy.
// etcd's own server/go.mod carries replace directives, so `go install
// go.etcd.io/etcd/server/v3@vX` is refused; requiring the module from a
// wrapper works because replace directives of dependencies are ignored.
// build.sh runs `go mod tidy`-free resolution via `go get` into a scratch
// copy of this directory; this file is the source of truth for versions.
module lab.local/etcdbin

go 1.24.0

require (
	go.etcd.io/etcd/etcdctl/v3 v3.6.16
	go.etcd.io/etcd/server/v3 v3.6.16
)
