// Package credentials gives every plugin its backend credentials from one place: a Source yields
// the current username, password (and for postgres a client certificate and key) with their
// expiry, and tells its users when they change. Sources are static (config and environment, the
// default), file (a watched file or directory as Vault Agent and Kubernetes Secret volumes write
// them) and vault (Vault or OpenBao over its HTTP API). No source ever logs or describes a value.
package credentials
