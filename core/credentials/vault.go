package credentials

// newVault builds the vault source.
func newVault(VaultConfig, Options) (Source, error) {
	return nil, ErrVaultUnavailable
}
