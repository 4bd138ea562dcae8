# What the Prism plugins may read from OpenBao/Vault (written by scripts/services.sh).
path "secret/data/prism/*" {
  capabilities = ["read"]
}
path "secret/metadata/prism/*" {
  capabilities = ["read"]
}
path "database/creds/prism-*" {
  capabilities = ["read"]
}
path "database/static-creds/prism-*" {
  capabilities = ["read"]
}
# Lease renewal of dynamic credentials, and the plugins' own token.
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
