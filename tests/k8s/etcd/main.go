// Command etcd is etcd's own server entry point (etcdmain), built from its published Go module
// so the integration tests' Kubernetes API server has a store; see scripts/k8s-tools.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
