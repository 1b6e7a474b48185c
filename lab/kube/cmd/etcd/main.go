// Command etcd is etcd's server (go.etcd.io/etcd/server/v3 etcdmain), the
// same entry point as etcd's own main package, at the version k8s.io/kubernetes
// is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
