package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgrelay/pgrelay/internal/fielderr"
)

// File is the jobs YAML file: `jobs: [...]`.
type File struct {
	Jobs []Job `yaml:"jobs"`
}

// MaxFileSize bounds a jobs file.
const MaxFileSize = 4 << 20

// ParseFile parses and validates a jobs YAML document. Unknown keys are
// errors. Every invalid job is reported, with fields prefixed by the job
// ("jobs[0](nightly).steps[1].command").
func ParseFile(r io.Reader) ([]Job, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read jobs file: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("jobs file is larger than %d bytes", MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("jobs file is empty: expected `jobs:` with a list of jobs")
		}
		return nil, fmt.Errorf("jobs file: %w", explainYAML(err))
	}
	if len(f.Jobs) == 0 {
		return nil, errors.New("jobs file has no jobs: expected `jobs:` with a list of jobs")
	}
	var probs []fielderr.Problem
	seen := map[string]int{}
	for i := range f.Jobs {
		j := &f.Jobs[i]
		j.ApplyDefaults()
		prefix := fmt.Sprintf("jobs[%d]", i)
		if j.Name != "" {
			prefix += "(" + j.Name + ")"
		}
		if prev, dup := seen[j.Name]; dup && j.Name != "" {
			probs = append(probs, fielderr.Problem{Field: prefix + ".name",
				Problem: fmt.Sprintf("duplicate: job %q is also jobs[%d]", j.Name, prev)})
		}
		seen[j.Name] = i
		if err := j.Validate(); err != nil {
			var ve *fielderr.Error
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					probs = append(probs, fielderr.Problem{Field: prefix + "." + p.Field, Problem: p.Problem})
				}
			} else {
				return nil, err
			}
		}
	}
	if len(probs) > 0 {
		return nil, fielderr.New(fielderr.Job, probs...)
	}
	return f.Jobs, nil
}

// Marshal writes jobs as a YAML document that ParseFile reads back.
func Marshal(js []Job) ([]byte, error) {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(File{Jobs: js}); err != nil {
		return nil, fmt.Errorf("encode jobs: %w", err)
	}
	return []byte(b.String()), nil
}

// unknownField is yaml.v3's message for a key no field takes.
var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type jobs\.(\w+)$`)

// explainYAML says a decoding error in the file's terms: an unknown key
// is named with the keys accepted where it stands (yaml.v3 says "field
// step not found in type jobs.Job").
func explainYAML(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	lines := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := unknownField.FindStringSubmatch(e)
		if m == nil {
			lines = append(lines, e)
			continue
		}
		where, keys := "the file", yamlKeys(reflect.TypeFor[File]())
		switch m[3] {
		case "Job":
			where, keys = "a job", yamlKeys(reflect.TypeFor[Job]())
		case "Step":
			where, keys = "a step", yamlKeys(reflect.TypeFor[Step]())
		}
		lines = append(lines, fmt.Sprintf("line %s: unknown key %q in %s: accepted are %s", m[1], m[2], where, strings.Join(keys, ", ")))
	}
	return errors.New(strings.Join(lines, "; "))
}

// yamlKeys are the YAML keys of a struct type's fields.
func yamlKeys(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}
