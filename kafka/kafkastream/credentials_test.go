package kafkastream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/conformance/streamtest"
	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	"github.com/prism-gateway/plugins/core/coretest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/credtest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

// reauthPeriod is connections.max.reauth.ms of the test broker (scripts/services.sh): a SASL
// session ends after it, so a connection still working later has re-authenticated.
const reauthPeriod = 10 * time.Second

// scramUser creates a SCRAM-SHA-512 user of its own on the test broker (over PLAINTEXT, as an
// operator with kafka-configs would) and deletes it when the test ends.
func scramUser(t *testing.T, adm *kadm.Client) (user, password string) {
	t.Helper()
	user, password = uniqueName("prism-cred-"), uniqueName("pw-")
	setSCRAM(t, adm, user, password)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: user, Mechanism: kadm.ScramSha512}}, nil)
	})
	return user, password
}

// setSCRAM sets (or replaces) user's SCRAM-SHA-512 password on the broker.
func setSCRAM(t *testing.T, adm *kadm.Client, user, password string) {
	t.Helper()
	resp, err := adm.AlterUserSCRAMs(t.Context(), nil, []kadm.UpsertSCRAM{{
		User: user, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: password,
	}})
	require.NoError(t, err)
	require.NoError(t, resp.Error())
}

// brokerAccepts reports whether the SASL listener takes user and password, on a new connection.
func brokerAccepts(t *testing.T, user, password string) error {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testsvc.KafkaSASLBrokers(t)...),
		kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha512Mechanism()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

// kvPut writes a new version of the test's own KV v2 secret under secret/prism/.
func kvPut(t *testing.T, admin *vault.Client, path, user, password string) {
	t.Helper()
	_, err := admin.KVv2("secret").Put(t.Context(), path, map[string]any{"username": user, "password": password})
	require.NoError(t, err)
}

func kvPath(t *testing.T, admin *vault.Client) string {
	t.Helper()
	path := "prism/" + uniqueName("kafka-test-")
	t.Cleanup(func() { _ = admin.KVv2("secret").DeleteMetadata(context.Background(), path) })
	return path
}

// appRoleLogin returns the role id of the shared prism-plugins AppRole and a file holding a
// fresh secret id, as a deployment mounts it, plus the secret id for the log scan.
func appRoleLogin(t *testing.T, admin *vault.Client) (roleID, secretIDFile, secretID string) {
	t.Helper()
	r, err := admin.Logical().ReadWithContext(t.Context(), "auth/approle/role/prism-plugins/role-id")
	require.NoError(t, err)
	require.NotNil(t, r, "AppRole prism-plugins: run `make services`")
	s, err := admin.Logical().WriteWithContext(t.Context(), "auth/approle/role/prism-plugins/secret-id", nil)
	require.NoError(t, err)
	secretID = s.Data["secret_id"].(string)
	secretIDFile = filepath.Join(t.TempDir(), "secret-id")
	require.NoError(t, os.WriteFile(secretIDFile, []byte(secretID+"\n"), 0o600))
	return r.Data["role_id"].(string), secretIDFile, secretID
}

// writeCredentialsFile replaces path atomically with a JSON credentials file, as Vault Agent
// renders a template.
func writeCredentialsFile(t *testing.T, path, user, password string) {
	t.Helper()
	data, err := json.Marshal(map[string]string{"username": user, "password": password})
	require.NoError(t, err)
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// startSASLPlugin runs the plugin on the SASL listener with env on top of the brokers and a debug
// log, so the log scans see everything the plugin says.
func startSASLPlugin(t *testing.T, p *kafkastream.Plugin, env map[string]string) *coretest.Running {
	t.Helper()
	all := map[string]string{
		"KAFKA_BROKERS":   strings.Join(testsvc.KafkaSASLBrokers(t), ","),
		"PRISM_LOG_LEVEL": "debug",
	}
	for k, v := range env {
		all[k] = v
	}
	r := coretest.Start(t, p, coretest.Options{
		YAML: "control_plane:\n  health_interval: 500ms\nbackend:\n" + groupTimings, Env: all,
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	return r
}

func TestPluginAuthenticatesFromEachCredentialsSource(t *testing.T) {
	adm, _ := admin(t)
	bao := credtest.VaultAdmin(t)
	tests := []struct {
		name   string
		source string
		// env configures the source for user and password and returns the secrets to scan for
		// besides the password.
		env func(t *testing.T, user, password string) (map[string]string, []string)
	}{
		{"static from KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD", "static", func(_ *testing.T, user, password string) (map[string]string, []string) {
			return map[string]string{"KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": password}, nil
		}},
		{"a password file with the username from KAFKA_SASL_USERNAME", "file", func(t *testing.T, user, password string) (map[string]string, []string) {
			t.Helper()
			path := filepath.Join(t.TempDir(), "password")
			require.NoError(t, os.WriteFile(path, []byte(password+"\n"), 0o600))
			return map[string]string{
				"KAFKA_SASL_USERNAME":                   user,
				"PRISM_BACKEND_CREDENTIALS_SOURCE":      "file",
				"PRISM_BACKEND_CREDENTIALS_FILE_PATH":   path,
				"PRISM_BACKEND_SASL_MECHANISM":          "SCRAM-SHA-512",
				"PRISM_BACKEND_CREDENTIALS_FILE_FORMAT": "password",
			}, nil
		}},
		{"vault KV v2 with an AppRole login", "vault", func(t *testing.T, user, password string) (map[string]string, []string) {
			t.Helper()
			path := kvPath(t, bao)
			kvPut(t, bao, path, user, password)
			roleID, secretIDFile, secretID := appRoleLogin(t, bao)
			return map[string]string{
				"PRISM_BACKEND_CREDENTIALS_SOURCE":                    "vault",
				"PRISM_BACKEND_CREDENTIALS_VAULT_ADDRESS":             testsvc.VaultAddr(t),
				"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_METHOD":         "approle",
				"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_ROLE_ID":        roleID,
				"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_SECRET_ID_FILE": secretIDFile,
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_PATH":         path,
			}, []string{secretID}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			user, password := scramUser(t, adm)
			env, secrets := tc.env(t, user, password)
			r := startSASLPlugin(t, kafkastream.New(), env)
			topic := newTopic(t, adm, 1)
			publishValues(t, client(r), topic, 0, "authenticated")
			caps := credtest.Capabilities(t, r)
			assert.Equal(t, tc.source, caps["credentials_source"])
			assert.Equal(t, user, caps["credentials_username"])
			for k, v := range caps {
				assert.NotContains(t, v, password, "capability %s", k)
			}
			credtest.AssertNoSecrets(t, r.Logs.String(), append(secrets, password)...)
		})
	}
}

// startErr runs the plugin as the binary would and returns why it did not start.
func startErr(t *testing.T, p *kafkastream.Plugin, env map[string]string) error {
	t.Helper()
	env["PRISM_CONTROL_PLANE_HOST"], env["PRISM_CONTROL_PLANE_PORT"] = "127.0.0.1", "0"
	env["PRISM_METRICS_HOST"], env["PRISM_METRICS_PORT"] = "127.0.0.1", "0"
	var logs coretest.Buffer
	srv, err := core.New(t.Context(), p, core.Options{
		Source:    config.Source{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }},
		LogOutput: &logs,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = srv.Serve(ctx)
	require.Error(t, err, "the plugin started without credentials")
	return err
}

func TestStartFailsWithoutCredentials(t *testing.T) {
	err := startErr(t, kafkastream.New(), map[string]string{
		"KAFKA_BROKERS":                       strings.Join(testsvc.KafkaSASLBrokers(t), ","),
		"PRISM_BACKEND_CREDENTIALS_SOURCE":    "file",
		"PRISM_BACKEND_CREDENTIALS_FILE_PATH": filepath.Join(t.TempDir(), "not-there"),
	})
	require.ErrorContains(t, err, "backend credentials (file)")
}

// TestSCRAMPasswordRotatedDuringSteadyPublish rotates the plugin's SCRAM password twice while a
// publisher and a subscriber run: on the broker (AlterUserSCRAMs, what kafka-configs --alter
// does) and then where the plugin reads it (a new KV v2 version, or a re-rendered file). The old
// password stops working at once; the plugin's open connections re-authenticate with the new
// one when the broker ends their sessions (connections.max.reauth.ms), new connections use it
// from the start, and no publish fails.
func TestSCRAMPasswordRotatedDuringSteadyPublish(t *testing.T) {
	adm, _ := admin(t)
	bao := credtest.VaultAdmin(t)
	tests := []struct {
		name string
		// setup configures the source and returns how to hand it a new password.
		setup func(t *testing.T, user, password string) (env map[string]string, publish func(password string))
	}{
		{"vault KV v2", func(t *testing.T, user, password string) (map[string]string, func(string)) {
			t.Helper()
			path := kvPath(t, bao)
			kvPut(t, bao, path, user, password)
			return map[string]string{
				"PRISM_BACKEND_CREDENTIALS_SOURCE":                     "vault",
				"PRISM_BACKEND_CREDENTIALS_VAULT_ADDRESS":              testsvc.VaultAddr(t),
				"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_TOKEN":           testsvc.VaultToken(),
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_PATH":          path,
				"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_POLL_INTERVAL": "100ms",
			}, func(pw string) { kvPut(t, bao, path, user, pw) }
		}},
		{"a watched JSON file", func(t *testing.T, user, password string) (map[string]string, func(string)) {
			t.Helper()
			path := filepath.Join(t.TempDir(), "kafka.json")
			writeCredentialsFile(t, path, user, password)
			return map[string]string{
				"PRISM_BACKEND_CREDENTIALS_SOURCE":             "file",
				"PRISM_BACKEND_CREDENTIALS_FILE_PATH":          path,
				"PRISM_BACKEND_CREDENTIALS_FILE_POLL_INTERVAL": "1s",
			}, func(pw string) { writeCredentialsFile(t, path, user, pw) }
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			user, password := scramUser(t, adm)
			env, hand := tc.setup(t, user, password)
			// Every producer connection goes through a proxy that counts them: re-authentication
			// happens on open connections, reconnecting would open new ones.
			proxy := testsvc.NewProxy(t, testsvc.KafkaSASLBrokers(t)[0])
			p := kafkastream.New()
			var d net.Dialer
			p.SetDialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, proxy.Addr())
			})
			r := startSASLPlugin(t, p, env)
			c := client(r)
			topic := newTopic(t, adm, 1)
			secrets := []string{password, testsvc.VaultToken()}

			sub := &streamv1.Subscription{Topics: []string{topic}, Group: streamtest.Group(t),
				Start: streamv1.StartPosition_START_POSITION_EARLIEST, MaxOutstandingMessages: 100_000}
			sb := streamtest.Subscribe(t, c, sub)
			received := map[string]bool{}
			var recvMu sync.Mutex
			go func() {
				for m := range sb.Messages() {
					recvMu.Lock()
					received[string(m.GetValue())] = true
					recvMu.Unlock()
				}
			}()
			receivedCount := func() int {
				recvMu.Lock()
				defer recvMu.Unlock()
				return len(received)
			}

			var published, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				partition := int32(0)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_, err := c.Publish(ctx, &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{
						{Value: fmt.Appendf(nil, "v%d", i), Partition: &partition},
					}})
					cancel()
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					published.Add(1)
				}
			}()
			t.Cleanup(func() {
				select {
				case <-stop:
				default:
					close(stop)
				}
				<-done
			})

			time.Sleep(time.Second)
			connsBefore := proxy.Accepted()
			old := password
			for round := 1; round <= 2; round++ {
				next := uniqueName("pw-")
				secrets = append(secrets, next)
				serial := credtest.Capabilities(t, r)["credentials_serial"]
				setSCRAM(t, adm, user, next)
				hand(next)
				require.Eventually(t, func() bool { return credtest.Capabilities(t, r)["credentials_serial"] != serial },
					10*time.Second, 20*time.Millisecond, "the plugin picks up the new password")
				err := brokerAccepts(t, user, old)
				require.ErrorIs(t, err, kerr.SaslAuthenticationFailed, "the old password no longer works")
				require.NoError(t, brokerAccepts(t, user, next))
				at := published.Load()
				// Past the session lifetime every connection from before the rotation has had to
				// authenticate again, with the new password.
				time.Sleep(reauthPeriod + time.Second)
				t.Logf("round %d: serial %s -> %s, %d publishes during the %s after it, %d failed so far",
					round, serial, credtest.Capabilities(t, r)["credentials_serial"], published.Load()-at, reauthPeriod+time.Second, failed.Load())
				old = next
			}
			close(stop)
			<-done
			require.Eventually(t, func() bool { return receivedCount() >= int(published.Load()) }, 30*time.Second, 50*time.Millisecond,
				"the subscriber receives every published record")
			t.Logf("%s: %d published, %d failed (first error: %v), %d received; producer connections %d before the rotations, %d after",
				tc.name, published.Load(), failed.Load(), firstErr.Load(), receivedCount(), connsBefore, proxy.Accepted())
			assert.Zero(t, failed.Load(), "no publish failed across the rotations")
			assert.Equal(t, int(published.Load()), receivedCount(), "the subscriber kept receiving")
			r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, time.Second)
			credtest.AssertNoSecrets(t, r.Logs.String(), secrets...)
		})
	}
}

// TestReloadReportsACredentialsChangeAsRestartRequired: the running source stays (it keeps
// rotating what it reads); a new source, file or secret takes a restart.
func TestReloadReportsACredentialsChangeAsRestartRequired(t *testing.T) {
	adm, _ := admin(t)
	user, password := scramUser(t, adm)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first.json"), filepath.Join(dir, "second.json")
	writeCredentialsFile(t, first, user, password)
	writeCredentialsFile(t, second, user, password)
	yaml := func(path string) string {
		return "backend:\n  brokers: [" + strings.Join(testsvc.KafkaSASLBrokers(t), ", ") + "]\n" + groupTimings +
			"  credentials:\n    source: file\n    file:\n      path: " + path + "\n"
	}
	r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: yaml(first)})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)

	r.WriteConfig(t, yaml(second))
	res, err := r.Server.Reload(t.Context())
	require.NoError(t, err)
	assert.Contains(t, res.RestartRequired, "backend.credentials.file.path")
	assert.Equal(t, first, credtest.Capabilities(t, r)["credentials_location"], "the running source stays until a restart")
	topic := newTopic(t, adm, 1)
	publishValues(t, client(r), topic, 0, "after the reload")
}
