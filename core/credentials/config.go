package credentials

import (
	"errors"
	"fmt"
	"time"

	"github.com/prism-gateway/plugins/core/config"
)

// The source kinds accepted by Config.Source.
const (
	KindStatic = "static"
	KindFile   = "file"
	KindVault  = "vault"
)

// The file formats accepted by FileConfig.Format.
const (
	FormatAuto     = "auto"
	FormatPassword = "password"
	FormatJSON     = "json"
	FormatYAML     = "yaml"
	FormatEnv      = "env"
)

// Config is the backend.credentials block every plugin embeds in its backend section. Its keys
// are overridden by PRISM_BACKEND_CREDENTIALS_<KEY> like any other key.
type Config struct {
	// Source is static (the backend section's own user and password; the default), file or vault.
	Source string `yaml:"source"`
	// File configures the file source.
	File FileConfig `yaml:"file"`
	// Vault configures the vault source.
	Vault VaultConfig `yaml:"vault"`
}

// FileConfig names a watched file or directory holding credentials.
type FileConfig struct {
	// Path is a file (password, JSON, YAML or key=value) or a directory with one file per field,
	// as a Kubernetes Secret volume holds them.
	Path string `yaml:"path"`
	// Format is auto, password, json, yaml or env (key=value lines); ignored for a directory.
	Format string `yaml:"format"`
	// UsernameField, PasswordField, CertField, KeyField and ExpiryField name the fields (or, for a
	// directory, the files). A missing username keeps the static one.
	UsernameField string `yaml:"username_field"`
	PasswordField string `yaml:"password_field"`
	CertField     string `yaml:"cert_field"`
	KeyField      string `yaml:"key_field"`
	ExpiryField   string `yaml:"expiry_field"`
	// PollInterval re-reads the file even without a file-system event, in case one is missed.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// VaultConfig configures the vault source (Vault or OpenBao). Empty Address, Token, Namespace
// and CACert fall back to VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE and VAULT_CACERT.
type VaultConfig struct {
	Address   string `yaml:"address"`
	CACert    string `yaml:"ca_cert"`
	Namespace string `yaml:"namespace"`
	// Auth selects and configures how the source logs in.
	Auth VaultAuthConfig `yaml:"auth"`
	// Secret selects what the source reads.
	Secret VaultSecretConfig `yaml:"secret"`
	// RenewMargin is how long before a lease's max TTL new credentials are issued.
	RenewMargin time.Duration `yaml:"renew_margin"`
	// RetryInterval is the wait between attempts while Vault is unreachable.
	RetryInterval time.Duration `yaml:"retry_interval"`
}

// VaultAuthConfig configures Vault login.
type VaultAuthConfig struct {
	// Method is token, approle or kubernetes.
	Method string `yaml:"method"`
	// Token is an inline token; TokenFile is re-read when the token needs replacing.
	Token     config.Secret `yaml:"token"`
	TokenFile string        `yaml:"token_file"`
	// RoleID and SecretIDFile are the AppRole login; Mount defaults to approle or kubernetes.
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
	// Role and JWTPath are the Kubernetes login.
	Role    string `yaml:"role"`
	JWTPath string `yaml:"jwt_path"`
	Mount   string `yaml:"mount"`
}

// VaultSecretConfig says which secret holds the credentials.
type VaultSecretConfig struct {
	// Kind is kv (KV v2), database (dynamic credentials) or database-static (static roles).
	Kind string `yaml:"kind"`
	// Mount is the engine's mount (secret, database).
	Mount string `yaml:"mount"`
	// Path is the KV v2 path; Role the database role.
	Path string `yaml:"path"`
	Role string `yaml:"role"`
	// UsernameField and PasswordField name the KV v2 fields.
	UsernameField string `yaml:"username_field"`
	PasswordField string `yaml:"password_field"`
	// PollInterval re-reads KV v2 and static roles to notice a new version.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// DefaultConfig returns the credentials block a plugin starts from: the static source.
func DefaultConfig() Config {
	return Config{
		Source: KindStatic,
		File: FileConfig{
			Format: FormatAuto, UsernameField: "username", PasswordField: "password",
			CertField: "tls.crt", KeyField: "tls.key", ExpiryField: "expiry",
			PollInterval: 30 * time.Second,
		},
		Vault: VaultConfig{
			Auth: VaultAuthConfig{Method: "token"},
			Secret: VaultSecretConfig{
				Kind: "kv", Mount: "secret", UsernameField: "username", PasswordField: "password",
				PollInterval: 30 * time.Second,
			},
			RenewMargin:   10 * time.Second,
			RetryInterval: 2 * time.Second,
		},
	}
}

// Validate reports problems as "credentials.<key>: problem", joined, so a plugin's backend
// section can prefix them with "backend.".
func (c Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("credentials.%s: "+format, append([]any{key}, args...)...))
	}
	switch c.Source {
	case KindStatic:
	case KindFile:
		if c.File.Path == "" {
			add("file.path", "required when credentials.source is file")
		}
		switch c.File.Format {
		case FormatAuto, FormatPassword, FormatJSON, FormatYAML, FormatEnv:
		default:
			add("file.format", "must be auto, password, json, yaml or env, got %q", c.File.Format)
		}
		if c.File.PasswordField == "" {
			add("file.password_field", "must not be empty")
		}
		if c.File.PollInterval < 100*time.Millisecond {
			add("file.poll_interval", "must be at least 100ms, got %s", c.File.PollInterval)
		}
	case KindVault:
		switch c.Vault.Auth.Method {
		case "token", "approle", "kubernetes":
		default:
			add("vault.auth.method", "must be token, approle or kubernetes, got %q", c.Vault.Auth.Method)
		}
		switch c.Vault.Secret.Kind {
		case "kv":
			if c.Vault.Secret.Path == "" {
				add("vault.secret.path", "required when vault.secret.kind is kv")
			}
		case "database", "database-static":
			if c.Vault.Secret.Role == "" {
				add("vault.secret.role", "required when vault.secret.kind is %s", c.Vault.Secret.Kind)
			}
		default:
			add("vault.secret.kind", "must be kv, database or database-static, got %q", c.Vault.Secret.Kind)
		}
		if c.Vault.RenewMargin < 0 {
			add("vault.renew_margin", "must not be negative, got %s", c.Vault.RenewMargin)
		}
		if c.Vault.RetryInterval < 100*time.Millisecond {
			add("vault.retry_interval", "must be at least 100ms, got %s", c.Vault.RetryInterval)
		}
		if c.Vault.Secret.PollInterval < 100*time.Millisecond {
			add("vault.secret.poll_interval", "must be at least 100ms, got %s", c.Vault.Secret.PollInterval)
		}
	default:
		add("source", "must be static, file or vault, got %q", c.Source)
	}
	return errors.Join(errs...)
}
