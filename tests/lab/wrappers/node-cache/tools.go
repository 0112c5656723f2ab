//go:build tools

// Package tools pins the main package this wrapper builds.
package tools

import _ "k8s.io/dns/cmd/node-cache"
