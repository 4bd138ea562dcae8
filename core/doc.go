// Package core runs a backend plugin: it loads configuration, sets up JSON logging and Prometheus
// metrics, serves the plugin's data services next to the control plane (gRPC health, reflection,
// prism.plugin.v1.PluginService) on one gRPC listener, drives health from the plugin's own backend
// checks, and handles drain, reload and shutdown.
package core
