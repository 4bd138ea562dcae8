package deploytest

import (
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../compose/compose.yaml"},
		cli.WithWorkingDirectory("../compose"), cli.WithProfiles(profiles), cli.WithEnv([]string{}))
	require.NoError(t, err)
	project, err := opts.LoadProject(t.Context()) // validates against the compose-spec schema
	require.NoError(t, err)
	return project
}

func TestComposeFileLoadsAndValidates(t *testing.T) {
	for _, tc := range []struct {
		name     string
		profiles []string
		services []string
	}{
		{"default profile", nil, []string{"postgres", "redis", "kafka", "kafka-init", "postgres-plugin", "kafka-plugin", "redis-plugin"}},
		{"vault profile", []string{"vault"}, []string{"openbao"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			project := loadCompose(t, tc.profiles...)
			for _, name := range tc.services {
				assert.Contains(t, project.ServiceNames(), name)
			}
		})
	}
}

func TestComposePluginsAreHardenedAndWaitForHealthyBackends(t *testing.T) {
	project := loadCompose(t)
	for name, schema := range schemas {
		t.Run(name, func(t *testing.T) {
			svc, err := project.GetService(name)
			require.NoError(t, err)
			assert.Equal(t, "prism/"+name+":latest", svc.Image)
			assert.True(t, svc.ReadOnly, "read_only")
			assert.Equal(t, "65532:65532", svc.User)
			assert.Equal(t, []string{"ALL"}, svc.CapDrop)
			require.NotNil(t, svc.HealthCheck)
			// The image has no shell: the healthcheck must exec the plugin binary itself.
			assert.Equal(t, types.HealthCheckTest{"CMD", "/" + name, "--health-probe"}, svc.HealthCheck.Test)
			require.NotEmpty(t, svc.DependsOn)
			for dep, cond := range svc.DependsOn {
				want := types.ServiceConditionHealthy
				if dep == "kafka-init" {
					want = types.ServiceConditionCompletedSuccessfully
				}
				assert.Equal(t, want, cond.Condition, "depends_on %s", dep)
				depSvc, err := project.GetService(dep)
				require.NoError(t, err)
				if want == types.ServiceConditionHealthy {
					assert.NotNil(t, depSvc.HealthCheck, "%s is waited on but has no healthcheck", dep)
				}
			}
			var published []uint32
			for _, p := range svc.Ports {
				published = append(published, p.Target)
			}
			assert.ElementsMatch(t, []uint32{uint32(schema.Port), uint32(schema.MetricsPort)}, published)
		})
	}
}

func TestComposePluginEnvIsWhatThePluginUnderstands(t *testing.T) {
	project := loadCompose(t)
	for name, schema := range schemas {
		t.Run(name, func(t *testing.T) {
			svc, err := project.GetService(name)
			require.NoError(t, err)
			known := envNames(schema)
			env := map[string]string{}
			for k, v := range svc.Environment {
				assert.True(t, known[k], "%s does not read %s", name, k)
				if v != nil {
					env[k] = *v
				}
			}
			// The values load and validate with the plugin's own loader.
			cfg := loadWith(t, schema, "", env)
			assert.Equal(t, schema.Port, cfg.ControlPlane.Port)
		})
	}
}

func TestComposeKafkaInitCreatesScramUserAndTopics(t *testing.T) {
	project := loadCompose(t)
	svc, err := project.GetService("kafka-init")
	require.NoError(t, err)
	script := svc.Command[0]
	assert.Contains(t, script, "SCRAM-SHA-512=[iterations=8192,password=prism]")
	assert.Contains(t, script, "--entity-name prism")
	assert.Contains(t, script, "kafka-topics.sh")
	plugin, err := project.GetService("kafka-plugin")
	require.NoError(t, err)
	assert.Equal(t, "kafka:9093", *plugin.Environment["KAFKA_BROKERS"])
	kafka, err := project.GetService("kafka")
	require.NoError(t, err)
	assert.True(t, slices.Contains([]string{"broker,controller"}, *kafka.Environment["KAFKA_PROCESS_ROLES"]), "KRaft")
	assert.Contains(t, *kafka.Environment["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], "SCRAM:SASL_PLAINTEXT")
}
