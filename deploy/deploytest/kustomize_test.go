package deploytest

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/prism-gateway/plugins/core/config"
)

// rendered is one overlay's objects, decoded strictly into Kubernetes API types.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
}

func render(t *testing.T, overlay string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), "../kubernetes/overlays/"+overlay)
	require.NoError(t, err, "kustomize build overlays/%s", overlay)
	out := rendered{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{},
	}
	for _, res := range resMap.Resources() {
		data, err := res.AsYAML()
		require.NoError(t, err)
		name, kind := res.GetName(), res.GetKind()
		var obj any
		switch kind {
		case "Deployment":
			d := &appsv1.Deployment{}
			out.deployments[name], obj = d, d
		case "Service":
			s := &corev1.Service{}
			out.services[name], obj = s, s
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			out.pdbs[name], obj = p, p
		case "ConfigMap":
			c := &corev1.ConfigMap{}
			out.configMaps[name], obj = c, c
		case "Secret":
			s := &corev1.Secret{}
			out.secrets[name], obj = s, s
		default:
			t.Fatalf("overlays/%s renders a %s (%s) this test does not know", overlay, kind, name)
		}
		// Strict: a misspelt or misplaced field fails instead of being dropped.
		require.NoError(t, yaml.UnmarshalStrict(data, obj), "%s %s", kind, name)
	}
	return out
}

func TestKustomizeOverlaysRenderValidWorkloads(t *testing.T) {
	for _, tc := range []struct {
		overlay     string
		replicas    int32
		minAvail    int
		vaultAgent  bool
		wantSecrets bool
	}{
		{overlay: "dev", replicas: 2, minAvail: 1, wantSecrets: true},
		{overlay: "prod", replicas: 3, minAvail: 2, vaultAgent: true},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			r := render(t, tc.overlay)
			require.Len(t, r.deployments, len(schemas))
			for name, schema := range schemas {
				t.Run(name, func(t *testing.T) {
					d := r.deployments[name]
					require.NotNil(t, d, "Deployment %s", name)
					cm := r.configMaps[name+"-config"]
					require.NotNil(t, cm, "ConfigMap %s-config", name)
					checkDeployment(t, d, cm, schema, tc.replicas)
					checkService(t, r.services[name], d, schema.Port, schema.MetricsPort)

					pdb := r.pdbs[name]
					require.NotNil(t, pdb, "PodDisruptionBudget %s", name)
					require.NotNil(t, pdb.Spec.MinAvailable)
					assert.Equal(t, tc.minAvail, pdb.Spec.MinAvailable.IntValue())
					assert.Equal(t, d.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels)
					assert.Less(t, tc.minAvail, int(tc.replicas), "the PDB must allow one eviction")

					for _, env := range d.Spec.Template.Spec.Containers[0].Env {
						if env.ValueFrom == nil || env.ValueFrom.SecretKeyRef == nil {
							continue
						}
						ref := env.ValueFrom.SecretKeyRef
						if tc.wantSecrets {
							s := r.secrets[ref.Name]
							// Generated names get a hash suffix; kustomize must have rewritten the reference.
							require.NotNil(t, s, "Secret %s", ref.Name)
							assert.Contains(t, s.Data, ref.Key, "Secret %s key %s", ref.Name, ref.Key)
						}
					}
					ann := d.Spec.Template.Annotations
					if tc.vaultAgent {
						assert.Equal(t, "true", ann["vault.hashicorp.com/agent-inject"])
						assert.NotEmpty(t, ann["vault.hashicorp.com/role"])
						assert.NotEmpty(t, ann["vault.hashicorp.com/agent-inject-secret-credentials.json"])
						assert.Contains(t, ann["vault.hashicorp.com/agent-inject-template-credentials.json"], `"password": "{{`,
							"the agent renders JSON the file source parses")
						env := map[string]string{}
						for _, e := range d.Spec.Template.Spec.Containers[0].Env {
							env[e.Name] = e.Value
						}
						assert.Equal(t, "file", env["PRISM_BACKEND_CREDENTIALS_SOURCE"])
						assert.Equal(t, "/vault/secrets/credentials.json", env["PRISM_BACKEND_CREDENTIALS_FILE_PATH"],
							"the plugin watches the file the agent writes")
						require.NotNil(t, d.Spec.Template.Spec.AutomountServiceAccountToken)
						assert.True(t, *d.Spec.Template.Spec.AutomountServiceAccountToken, "the injector needs the token")
					} else {
						assert.NotContains(t, ann, "vault.hashicorp.com/agent-inject")
					}
				})
			}
		})
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment, cm *corev1.ConfigMap, schema config.Schema, replicas int32) {
	t.Helper()
	require.NotNil(t, d.Spec.Replicas)
	assert.Equal(t, replicas, *d.Spec.Replicas)
	pod := d.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]

	// The ConfigMap is the config the plugin loads (strictly, with its own loader), and the
	// env values the plugin would see on top.
	env := map[string]string{}
	known := envNames(schema)
	for _, e := range c.Env {
		assert.True(t, known[e.Name], "%s does not read %s", d.Name, e.Name)
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = "from-secret"
		}
	}
	cfg := loadWith(t, schema, cm.Data["plugin.yaml"], env)
	assert.Equal(t, schema.Port, cfg.ControlPlane.Port, "the ConfigMap keeps the plugin's default port")
	assert.Equal(t, schema.MetricsPort, cfg.Metrics.Port)
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/prism" {
			mounted = m.SubPath == "" && m.ReadOnly
		}
	}
	assert.True(t, mounted, "config folder mounted read-only at /etc/prism without subPath")

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	assert.Equal(t, map[string]int32{"grpc": int32(cfg.ControlPlane.Port), "metrics": int32(cfg.Metrics.Port)}, ports)

	// Probes: readiness on gRPC health, liveness and startup on /healthz.
	require.NotNil(t, c.ReadinessProbe)
	require.NotNil(t, c.ReadinessProbe.GRPC, "readiness is a gRPC probe")
	assert.Equal(t, int32(cfg.ControlPlane.Port), c.ReadinessProbe.GRPC.Port)
	for probeName, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		require.NotNil(t, p, probeName)
		require.NotNil(t, p.HTTPGet, "%s is an HTTP probe", probeName)
		assert.Equal(t, "/healthz", p.HTTPGet.Path, probeName)
		assert.Equal(t, "metrics", p.HTTPGet.Port.String(), probeName)
	}

	// Security.
	psc := pod.SecurityContext
	require.NotNil(t, psc)
	require.NotNil(t, psc.RunAsNonRoot)
	assert.True(t, *psc.RunAsNonRoot)
	require.NotNil(t, psc.RunAsUser)
	assert.Equal(t, int64(65532), *psc.RunAsUser)
	require.NotNil(t, psc.SeccompProfile)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
	sc := c.SecurityContext
	require.NotNil(t, sc)
	require.NotNil(t, sc.ReadOnlyRootFilesystem)
	assert.True(t, *sc.ReadOnlyRootFilesystem)
	require.NotNil(t, sc.AllowPrivilegeEscalation)
	assert.False(t, *sc.AllowPrivilegeEscalation)
	require.NotNil(t, sc.Capabilities)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.Empty(t, sc.Capabilities.Add)

	// Resources, spreading, scraping.
	assert.False(t, c.Resources.Requests.Cpu().IsZero(), "cpu request")
	assert.False(t, c.Resources.Requests.Memory().IsZero(), "memory request")
	assert.False(t, c.Resources.Limits.Memory().IsZero(), "memory limit")
	require.NotEmpty(t, pod.TopologySpreadConstraints)
	for _, tsc := range pod.TopologySpreadConstraints {
		require.NotNil(t, tsc.LabelSelector)
		assert.Equal(t, d.Spec.Selector.MatchLabels, tsc.LabelSelector.MatchLabels)
	}
	ann := d.Spec.Template.Annotations
	assert.Equal(t, "true", ann["prometheus.io/scrape"])
	assert.Equal(t, strconv.Itoa(cfg.Metrics.Port), ann["prometheus.io/port"])
	assert.Equal(t, "/metrics", ann["prometheus.io/path"])

	// Shutdown: preStop sleep, then SIGTERM drains for shutdown_grace; the pod's grace
	// period must cover both or the kubelet kills in-flight calls.
	require.NotNil(t, c.Lifecycle)
	require.NotNil(t, c.Lifecycle.PreStop)
	require.NotNil(t, c.Lifecycle.PreStop.Sleep, "preStop is a sleep action (the image has no shell)")
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	require.NotNil(t, pod.TerminationGracePeriodSeconds)
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	need := preStop + cfg.ControlPlane.ShutdownGrace
	assert.GreaterOrEqual(t, grace, need, "terminationGracePeriodSeconds < preStop + shutdown_grace")
	assert.LessOrEqual(t, grace, need+10*time.Second, "terminationGracePeriodSeconds far above preStop + shutdown_grace (%s)", need)
}

func checkService(t *testing.T, s *corev1.Service, d *appsv1.Deployment, port, metricsPort int) {
	t.Helper()
	require.NotNil(t, s, "Service %s", d.Name)
	assert.Equal(t, d.Spec.Selector.MatchLabels, s.Spec.Selector)
	ports := map[string]int32{}
	for _, p := range s.Spec.Ports {
		ports[p.Name] = p.Port
		assert.Equal(t, p.Name, p.TargetPort.String(), "targetPort names the container port")
	}
	assert.Equal(t, map[string]int32{"grpc": int32(port), "metrics": int32(metricsPort)}, ports)
}
