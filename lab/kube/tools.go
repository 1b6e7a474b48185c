//go:build tools

// Package tools names the commands this module builds (build.sh), so that
// `go mod tidy` keeps their dependencies. It is never compiled.
package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
