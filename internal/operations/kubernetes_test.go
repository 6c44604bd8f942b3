package operations_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/pgrelay/pgrelay/internal/secret"
)

// decodeStrict decodes one Kubernetes manifest into obj, refusing fields
// the official API type does not have (a misspelt or misplaced key would
// otherwise be dropped by the API server without a word), and checks its
// apiVersion and kind.
func decodeStrict(t *testing.T, path string, obj any, apiVersion, kind string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if docs := bytes.Split(data, []byte("\n---")); len(docs) != 1 {
		t.Fatalf("%s holds %d documents; keep one object per file", path, len(docs))
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("%s does not decode strictly into %T: %v", path, obj, err)
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		t.Fatalf("%s is %s %s, want %s %s", path, tm.APIVersion, tm.Kind, apiVersion, kind)
	}
}

// TestKubernetesManifests decodes deploy/kubernetes strictly into the
// official API types and checks what pgrelay needs of them: several
// replicas on a PostgreSQL store, the master key from a Secret (a file,
// never a literal), readiness on /readyz and liveness on /healthz on the
// served port, a non-root, read-only, unprivileged container, and a
// Service and PodDisruptionBudget that select the pods.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(repoRoot(t), "deploy", "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) != 4 {
		t.Fatalf("manifests in %s: %v %v; want deployment, service, poddisruptionbudget and secret.example", dir, files, err)
	}
	var dep appsv1.Deployment
	decodeStrict(t, filepath.Join(dir, "deployment.yaml"), &dep, "apps/v1", "Deployment")
	var svc corev1.Service
	decodeStrict(t, filepath.Join(dir, "service.yaml"), &svc, "v1", "Service")
	var pdb policyv1.PodDisruptionBudget
	decodeStrict(t, filepath.Join(dir, "poddisruptionbudget.yaml"), &pdb, "policy/v1", "PodDisruptionBudget")
	var sec corev1.Secret
	decodeStrict(t, filepath.Join(dir, "secret.example.yaml"), &sec, "v1", "Secret")

	// Strict decoding catches a misspelt key.
	data, _ := os.ReadFile(filepath.Join(dir, "deployment.yaml"))
	var typo appsv1.Deployment
	if err := yaml.UnmarshalStrict(bytes.Replace(data, []byte("readinessProbe:"), []byte("readinesProbe:"), 1), &typo); err == nil {
		t.Fatal("a misspelt key decoded without error: the check is not strict")
	}

	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("replicas %v, want at least 2", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template
	labels := pod.Labels
	for what, sel := range map[string]map[string]string{"deployment selector": dep.Spec.Selector.MatchLabels,
		"service selector": svc.Spec.Selector, "disruption budget selector": pdb.Spec.Selector.MatchLabels} {
		if len(sel) == 0 {
			t.Errorf("%s is empty", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s %s=%s does not select the pods (labels %v)", what, k, v, labels)
			}
		}
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if !slices.Equal(c.Args[:1], []string{"serve"}) || !slices.Contains(c.Args, "0.0.0.0:8080") {
		t.Errorf("args %v: want serve on 0.0.0.0:8080", c.Args)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 || c.Ports[0].Name != "http" {
		t.Errorf("ports %+v, want http 8080", c.Ports)
	}
	for what, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != what || p.HTTPGet.Port != intstr.FromString("http") {
			t.Errorf("probe on %s: %+v", what, p)
		}
	}
	if tp := svc.Spec.Ports; len(tp) != 1 || tp[0].TargetPort != intstr.FromString("http") {
		t.Errorf("service ports %+v, want target port http", tp)
	}

	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if _, ok := env[secret.MasterKeyEnv]; ok {
		t.Errorf("%s is set in the manifest: the key comes from the Secret as a file", secret.MasterKeyEnv)
	}
	store := env["PGRELAY_STORE"]
	if store.ValueFrom == nil || store.ValueFrom.SecretKeyRef == nil || store.ValueFrom.SecretKeyRef.Name != sec.Name ||
		sec.StringData[store.ValueFrom.SecretKeyRef.Key] == "" || !strings.HasPrefix(sec.StringData[store.ValueFrom.SecretKeyRef.Key], "postgres://") {
		t.Errorf("PGRELAY_STORE %+v: want a postgres:// URL from the Secret %s", store, sec.Name)
	}
	keyFile := env[secret.MasterKeyFileEnv].Value
	var keyVolume string
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(keyFile, m.MountPath+"/") {
			keyVolume = m.Name
			if !m.ReadOnly {
				t.Errorf("the master key is mounted writable")
			}
		}
	}
	found := false
	for _, v := range pod.Spec.Volumes {
		if v.Name != keyVolume || v.Secret == nil {
			continue
		}
		found = v.Secret.SecretName == sec.Name && len(v.Secret.Items) == 1 && v.Secret.Items[0].Path == filepath.Base(keyFile) &&
			sec.StringData[v.Secret.Items[0].Key] != "" && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o077 == 0
	}
	if !found {
		t.Errorf("%s=%q is not the master key of the Secret %s mounted read-only, mode 0400", secret.MasterKeyFileEnv, keyFile, sec.Name)
	}

	ps, cs := pod.Spec.SecurityContext, c.SecurityContext
	switch {
	case ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0:
		t.Errorf("pod security context %+v: want a non-root numeric user", ps)
	case ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("pod seccomp profile %+v, want RuntimeDefault", ps.SeccompProfile)
	case cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation || cs.ReadOnlyRootFilesystem == nil ||
		!*cs.ReadOnlyRootFilesystem || cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("container security context %+v: want no privilege escalation, a read-only root, all capabilities dropped", cs)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the pods get a service account token they do not need")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 {
		t.Errorf("disruption budget %+v, want at least one pod available", pdb.Spec)
	}
}
