package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/prism-gateway/plugins/core/config"
)

// vaultTick is how often the vault source checks whether something is due; requests are made
// only when a lease, token or poll interval says so.
const vaultTick = 250 * time.Millisecond

// Vault is the source that reads credentials from Vault or OpenBao: KV v2 secrets, database
// dynamic credentials (leases renewed at about 2/3 of their TTL, new credentials issued before the
// max TTL) and database static roles. Its own token is renewed, or re-acquired by logging in again.
type Vault struct {
	cfg     VaultConfig
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	client  *vault.Client
	h       *holder
	now     func() time.Time

	// Owned by Start and then the run goroutine only.
	tokenExpiry  time.Time // zero: the token does not expire
	tokenRenewAt time.Time
	tokenRenew   bool
	leaseID      string // never logged
	leaseRenew   bool
	renewAt      time.Time
	readAt       time.Time
	retryAt      time.Time

	bg lifecycle
}

func newVault(cfg VaultConfig, opts Options) (Source, error) {
	return NewVault(cfg, opts)
}

// NewVault builds a vault source. Address, CA, namespace and token fall back to VAULT_ADDR,
// VAULT_CACERT, VAULT_NAMESPACE and VAULT_TOKEN, as the vault CLI reads them.
func NewVault(cfg VaultConfig, opts Options) (*Vault, error) {
	vc := vault.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, VAULT_SKIP_VERIFY, ...
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client config: %w", vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	if cfg.CACert != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("vault ca_cert %s: %w", cfg.CACert, err)
		}
	}
	vc.MaxRetries = 0 // the source retries on its own schedule
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	if cfg.Auth.Mount == "" {
		cfg.Auth.Mount = cfg.Auth.Method
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Vault{cfg: cfg, opts: opts, log: log, metrics: opts.Metrics, client: client, h: newHolder(), now: time.Now}, nil
}

// Start logs in, reads the first credentials and starts renewing them.
func (v *Vault) Start(ctx context.Context) error {
	first := func() error {
		if err := v.login(ctx); err != nil {
			v.metrics.failed(KindVault)
			return err
		}
		if err := v.fetch(ctx); err != nil {
			v.metrics.failed(KindVault)
			return err
		}
		return nil
	}
	return v.bg.start(ctx, "credentials vault source", first, v.run)
}

// Stop ends renewal and waits for it. Leases are left to expire so connections made with them
// keep working until the pools retire them.
func (v *Vault) Stop(ctx context.Context) error { return v.bg.stop(ctx, "credentials vault source") }

// Current implements Source.
func (v *Vault) Current() (Credentials, error) { return v.h.current() }

// Changes implements Source.
func (v *Vault) Changes() <-chan struct{} { return v.h.changes() }

// Describe implements Source.
func (v *Vault) Describe() Description {
	return v.h.describe(KindVault, v.client.Address()+" "+v.secretPath())
}

func (v *Vault) secretPath() string {
	s := v.cfg.Secret
	switch s.Kind {
	case "database":
		return s.Mount + "/creds/" + s.Role
	case "database-static":
		return s.Mount + "/static-creds/" + s.Role
	}
	return s.Mount + "/data/" + s.Path
}

func (v *Vault) run(ctx context.Context) {
	tick := time.NewTicker(vaultTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := v.now()
		if now.Before(v.retryAt) {
			continue
		}
		if err := v.step(ctx, now); err != nil {
			if ctx.Err() != nil {
				return
			}
			v.retryAt = now.Add(v.cfg.RetryInterval)
			v.h.setError(err)
			v.metrics.failed(KindVault)
			v.log.Warn("vault credentials refresh failed; using the cached credentials until they expire",
				"address", v.client.Address(), "path", v.secretPath(), "error", err)
		}
	}
}

// step does whatever is due: token renewal or login, then lease renewal, re-issue or re-read.
func (v *Vault) step(ctx context.Context, now time.Time) error {
	if !v.tokenExpiry.IsZero() && !now.Before(v.tokenRenewAt) {
		if err := v.renewToken(ctx, now); err != nil {
			v.log.Info("vault token renewal failed; logging in again", "method", v.cfg.Auth.Method, "error", err)
			if err := v.login(ctx); err != nil {
				return err
			}
		}
	}
	switch v.cfg.Secret.Kind {
	case "database":
		if now.Before(v.renewAt) {
			return nil
		}
		if v.leaseRenew {
			err := v.renewLease(ctx, now)
			if err == nil {
				return nil
			}
			v.log.Info("vault lease renewal failed; issuing new credentials", "path", v.secretPath(), "error", err)
		}
		return v.fetch(ctx)
	default:
		if now.Before(v.readAt) {
			return nil
		}
		return v.fetch(ctx)
	}
}

// login obtains a client token by the configured method.
func (v *Vault) login(ctx context.Context) error {
	a := v.cfg.Auth
	var path string
	var body map[string]any
	switch a.Method {
	case "token":
		token := a.Token.Reveal()
		if a.TokenFile != "" {
			data, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return fmt.Errorf("vault token_file: %w", err)
			}
			token = strings.TrimSpace(string(data))
		}
		if token == "" {
			token = v.client.Token() // VAULT_TOKEN
		}
		if token == "" {
			return errors.New("vault auth: no token (set credentials.vault.auth.token, token_file or VAULT_TOKEN)")
		}
		v.client.SetToken(token)
		return v.lookupToken(ctx)
	case "approle":
		secretID, err := os.ReadFile(a.SecretIDFile)
		if err != nil {
			return fmt.Errorf("vault approle secret_id_file: %w", err)
		}
		path = "auth/" + a.Mount + "/login"
		body = map[string]any{"role_id": a.RoleID, "secret_id": strings.TrimSpace(string(secretID))}
	case "kubernetes":
		jwtPath := a.JWTPath
		if jwtPath == "" {
			jwtPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}
		jwt, err := os.ReadFile(jwtPath) //nolint:gosec // the operator's configured service-account token path
		if err != nil {
			return fmt.Errorf("vault kubernetes jwt_path: %w", err)
		}
		path = "auth/" + a.Mount + "/login"
		body = map[string]any{"role": a.Role, "jwt": strings.TrimSpace(string(jwt))}
	default:
		return fmt.Errorf("vault auth method %q", a.Method)
	}
	v.client.ClearToken()
	secret, err := v.client.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return fmt.Errorf("vault %s login: %w", a.Method, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return fmt.Errorf("vault %s login: no token in the response", a.Method)
	}
	v.client.SetToken(secret.Auth.ClientToken)
	v.setTokenLifetime(v.now(), time.Duration(secret.Auth.LeaseDuration)*time.Second, secret.Auth.Renewable)
	v.log.Info("logged in to vault", "method", a.Method, "address", v.client.Address())
	return nil
}

func (v *Vault) lookupToken(ctx context.Context) error {
	secret, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault token lookup: %w", err)
	}
	ttl, _ := secret.TokenTTL()
	renewable, _ := secret.TokenIsRenewable()
	v.setTokenLifetime(v.now(), ttl, renewable)
	return nil
}

func (v *Vault) setTokenLifetime(now time.Time, ttl time.Duration, renewable bool) {
	if ttl <= 0 {
		v.tokenExpiry = time.Time{} // root and periodic-less tokens without a TTL
		return
	}
	v.tokenExpiry = now.Add(ttl)
	v.tokenRenewAt = now.Add(ttl * 2 / 3)
	v.tokenRenew = renewable
}

func (v *Vault) renewToken(ctx context.Context, now time.Time) error {
	if !v.tokenRenew {
		return errors.New("token is not renewable")
	}
	secret, err := v.client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return fmt.Errorf("renew token: %w", err)
	}
	if secret == nil || secret.Auth == nil {
		return errors.New("renew token: empty response")
	}
	ttl := time.Duration(secret.Auth.LeaseDuration) * time.Second
	// A token at its max TTL renews for less than a tick's worth: log in again instead.
	if ttl <= v.cfg.RetryInterval {
		return errors.New("token is at its max TTL")
	}
	v.setTokenLifetime(now, ttl, secret.Auth.Renewable)
	return nil
}

func (v *Vault) renewLease(ctx context.Context, now time.Time) error {
	secret, err := v.client.Sys().RenewWithContext(ctx, v.leaseID, 0)
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	ttl := time.Duration(secret.LeaseDuration) * time.Second
	expiry := now.Add(ttl)
	// The lease cannot be extended past the margin before its max TTL: issue new credentials.
	if ttl <= v.cfg.RenewMargin {
		return fmt.Errorf("lease has %s left, within the %s margin before its max TTL", ttl, v.cfg.RenewMargin)
	}
	cur, _ := v.h.current()
	cur.Expiry = expiry
	v.h.updateExpiry(expiry)
	v.metrics.renewed(KindVault)
	v.metrics.setExpiry(KindVault, cur)
	v.renewAt = renewTime(now, ttl, v.cfg.RenewMargin)
	return nil
}

// renewTime is when to act on a lease of ttl from now: at 2/3 of it, or earlier to keep margin
// before its end — but never before 1/3 of it, so that a margin as long as the lease (renew_margin
// 10s on a 10s role) cannot turn into issuing credentials in a loop.
func renewTime(now time.Time, ttl, margin time.Duration) time.Time {
	at := now.Add(ttl * 2 / 3)
	if latest := now.Add(ttl - margin); latest.Before(at) {
		at = latest
	}
	if earliest := now.Add(ttl / 3); at.Before(earliest) {
		at = earliest
	}
	return at
}

// fetch reads the secret and stores the credentials it holds.
func (v *Vault) fetch(ctx context.Context) error {
	now := v.now()
	s := v.cfg.Secret
	var creds Credentials
	switch s.Kind {
	case "kv":
		kv, err := v.client.KVv2(s.Mount).Get(ctx, s.Path)
		if err != nil {
			return fmt.Errorf("read %s: %w", v.secretPath(), err)
		}
		if creds, err = v.fromData(kv.Data, s.UsernameField, s.PasswordField); err != nil {
			return err
		}
		v.readAt = now.Add(s.PollInterval)
	case "database", "database-static":
		secret, err := v.client.Logical().ReadWithContext(ctx, v.secretPath())
		if err != nil {
			return fmt.Errorf("read %s: %w", v.secretPath(), err)
		}
		if secret == nil {
			return fmt.Errorf("read %s: no secret", v.secretPath())
		}
		if creds, err = v.fromData(secret.Data, "username", "password"); err != nil {
			return err
		}
		if s.Kind == "database" {
			ttl := time.Duration(secret.LeaseDuration) * time.Second
			creds.Expiry = now.Add(ttl)
			v.leaseID, v.leaseRenew = secret.LeaseID, secret.Renewable
			v.renewAt = renewTime(now, ttl, v.cfg.RenewMargin)
		} else {
			// The password changes at the next rotation: re-read right after it.
			var ttl int64
			if n, ok := secret.Data["ttl"].(json.Number); ok {
				ttl, _ = n.Int64()
			}
			creds.Expiry = now.Add(time.Duration(ttl) * time.Second)
			v.readAt = now.Add(min(s.PollInterval, time.Duration(ttl)*time.Second+time.Second))
		}
	}
	v.h.set(creds, func(stored Credentials) {
		if stored.Serial > 1 { // the first credentials are no rotation
			v.metrics.rotated(KindVault, stored)
		}
		v.log.Info("credentials changed", "source", KindVault, "path", v.secretPath(),
			"username", stored.Username, "serial", stored.Serial, "expiry", stored.Expiry)
	})
	v.metrics.setExpiry(KindVault, creds)
	return nil
}

func (v *Vault) fromData(data map[string]any, userField, passField string) (Credentials, error) {
	creds := Credentials{Username: v.opts.Static.Username}
	if u, _ := data[userField].(string); u != "" {
		creds.Username = u
	}
	p, _ := data[passField].(string)
	if p == "" {
		return Credentials{}, fmt.Errorf("read %s: field %q is missing or empty", v.secretPath(), passField)
	}
	creds.Password = config.Secret(p)
	return creds, nil
}

var _ Source = (*Vault)(nil)
