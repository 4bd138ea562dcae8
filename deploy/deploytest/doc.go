// Package deploytest checks the manifests under deploy/: the compose file loads and validates
// with compose-go, the kustomize overlays render with krusty and decode strictly into
// Kubernetes API types, and both agree with the plugins' real config schemas.
package deploytest
