package jobs_test

import (
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// TestProfilesYAMLQuotesNames checks that the profile and target names of
// the generated profiles.yml are quoted strings: dbt reads the file with
// PyYAML, a YAML 1.1 reader, which takes a plain yes, no, on, off, true,
// false or null (names a job's profile and target may have) as a boolean
// or null, so that `dbt --profile on` found no profile named "on".
func TestProfilesYAMLQuotesNames(t *testing.T) {
	t.Parallel()
	spec := &connection.Spec{User: "dbt", Database: "analytics"}
	for _, name := range []string{"yes", "No", "on", "OFF", "true", "null", "pgrelay"} {
		text := jobs.ProfilesYAML(name, name, "127.0.0.1", "5432", spec, "marts", 4, "prefer", "")
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatalf("%s: not YAML: %v\n%s", name, err, text)
		}
		top := doc.Content[0]
		profile, body := top.Content[0], top.Content[1]
		var target, outputs *yaml.Node
		for i := 0; i+1 < len(body.Content); i += 2 {
			switch body.Content[i].Value {
			case "target":
				target = body.Content[i+1]
			case "outputs":
				outputs = body.Content[i+1]
			}
		}
		if target == nil || outputs == nil || len(outputs.Content) == 0 {
			t.Fatalf("%s: no target or outputs:\n%s", name, text)
		}
		for what, n := range map[string]*yaml.Node{"profile": profile, "target": target, "output": outputs.Content[0]} {
			if n.Value != name || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
				t.Errorf("%s %q is not a quoted string (a YAML 1.1 reader may take it for a boolean or null):\n%s", what, n.Value, text)
			}
		}
	}
}
