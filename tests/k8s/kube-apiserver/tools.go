//go:build tools

// Package tools pins the commands scripts/k8s-tools builds from k8s.io/kubernetes, so
// `go mod tidy` keeps their whole import graphs in go.sum: kube-apiserver always, kubectl only
// on a machine without one on PATH.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
