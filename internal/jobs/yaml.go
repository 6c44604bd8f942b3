package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pgrelay/pgrelay/internal/connection"
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
		return nil, fmt.Errorf("jobs file: %w", explainYAML(err, data))
	}
	if !emptyRest(dec) {
		// Only the first document would be applied.
		return nil, fmt.Errorf("jobs file: line %d: the YAML document ends here and another follows, which would not be applied: "+
			"a jobs file is one YAML document, with every job in its one `jobs:` list", secondDocumentLine(data))
	}
	// A float given for an integer field was truncated by the decoder.
	// Walked once the decode succeeded: its alias limits held.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err == nil {
		if err := fractionalInt(&doc, reflect.TypeFor[File](), ""); err != nil {
			return nil, fmt.Errorf("jobs file: %w", err)
		}
		markExplicitZeros(&doc, f.Jobs)
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

// fractionalInt finds a number that is not whole (1.5, -.inf) given
// in n for an integer field of type t, at path: yaml.v3 truncates it
// (`retries: 1.5` was saved as 1), where JSON refuses it. A whole number
// written as a float (2.0) keeps its value and passes.
func fractionalInt(n *yaml.Node, t reflect.Type, path string) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := fractionalInt(c, t, path); err != nil {
				return err
			}
		}
	case yaml.AliasNode:
		return fractionalInt(n.Alias, t, path)
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for i, c := range n.Content {
			if err := fractionalInt(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		if t.Kind() != reflect.Struct {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			for f := range t.Fields() {
				if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
					p := key
					if path != "" {
						p = path + "." + key
					}
					if err := fractionalInt(n.Content[i+1], f.Type, p); err != nil {
						return err
					}
				}
			}
		}
	case yaml.ScalarNode:
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		default:
			return nil
		}
		if n.ShortTag() != "!!float" {
			return nil
		}
		if v, err := strconv.ParseFloat(n.Value, 64); err == nil && v == math.Trunc(v) && !math.IsInf(v, 0) {
			return nil
		}
		return fmt.Errorf("line %d: %s: %s is not a whole number: accepted is a whole number such as 2", n.Line, path, n.Value)
	}
	return nil
}

// emptyRest reports whether the documents dec has left are empty (a
// trailing "---").
func emptyRest(dec *yaml.Decoder) bool {
	for {
		var doc yaml.Node
		switch err := dec.Decode(&doc); {
		case errors.Is(err, io.EOF):
			return true
		case err != nil:
			return false
		}
		for _, n := range doc.Content {
			if n.Kind != yaml.ScalarNode || n.Tag != "!!null" || n.Value != "" {
				return false
			}
		}
	}
}

// secondDocumentLine is the 1-based line of the document marker ("---"
// or "...") that ends the first YAML document of data, 0 when none is
// found.
func secondDocumentLine(data []byte) int {
	content := false
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimRight(l, "\r")
		marker := (strings.HasPrefix(l, "---") || strings.HasPrefix(l, "...")) &&
			(len(l) == 3 || l[3] == ' ' || l[3] == '\t')
		switch t := strings.TrimSpace(l); {
		case marker && content:
			return i + 1
		case !marker && t != "" && !strings.HasPrefix(t, "#") && !strings.HasPrefix(l, "%"):
			content = true
		}
	}
	return 0
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

// notAList is yaml.v3's message for a scalar where a list is expected.
var notAList = regexp.MustCompile(`^line (\d+): cannot unmarshal !!(?:str|int|float|bool) .* into \[\]string$`)

// wrongType is yaml.v3's message for a value of another kind than its
// field takes ("line 4: cannot unmarshal !!str `many` into int"): the
// line, the YAML tag, the value (absent for a map or a list) and the Go
// type.
var wrongType = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")

// badDuration is a duration's own error, with the line it names.
var badDuration = regexp.MustCompile(`^line (\d+): (duration .*)$`)

// jobsExample is a jobs file of one job, quoted where the file's shape
// is wrong.
const jobsExample = "`jobs: [{name: nightly, connection: wh, steps: [{sql: select 1}]}]`"

// wrongTypeProblem says in the file's terms what the key on line
// (1-based) takes, for a value of YAML tag tag (its text val) that does
// not fit the Go type into (yaml.v3 names the Go types).
func wrongTypeProblem(data []byte, line, tag, val, into string) string {
	given := "a " + map[string]string{"map": "map of keys", "seq": "list", "str": "string", "bool": "true/false",
		"int": "number", "float": "number", "null": "empty value"}[tag]
	if given == "a " {
		given = "a !!" + tag
	}
	if val != "" {
		given = strconv.Quote(val)
	}
	key := keyOnLine(data, line)
	switch into {
	case "jobs.File":
		return fmt.Sprintf("line %s: the file is %s: accepted is a map with the key `jobs:` holding a list of jobs, e.g. %s", line, given, jobsExample)
	case "[]jobs.Job":
		return fmt.Sprintf("line %s: jobs is %s: accepted is a list of jobs, each starting with \"- name:\", e.g. %s", line, given, jobsExample)
	case "jobs.Job":
		return fmt.Sprintf("line %s: a job is %s: accepted is a map of its keys (%s), e.g. {name: nightly, connection: wh, steps: [{sql: select 1}]}",
			line, given, strings.Join(yamlKeys(reflect.TypeFor[Job]()), ", "))
	case "[]jobs.Step":
		return fmt.Sprintf("line %s: steps is %s: accepted is a list of steps, each starting with \"- sql:\" or \"- command:\", e.g. `steps: [{sql: select 1}]`", line, given)
	case "jobs.Step":
		return fmt.Sprintf("line %s: a step is %s: accepted is a map with sql or command, e.g. {sql: select 1} or {command: [dbt, build]}", line, given)
	case "int":
		return fmt.Sprintf("line %s: %s: %s is not a whole number: accepted is a whole number such as 2", line, key, given)
	case "string":
		return fmt.Sprintf("line %s: %s: %s is not accepted: accepted is text, in quotes when it could be read as a list, a map, a number or true/false", line, key, given)
	}
	return fmt.Sprintf("line %s: %s: %s is not accepted", line, key, given)
}

// keyOnLine is the key that line (1-based, as yaml.v3 gives it) of data
// sets ("retries" of "    retries: many", "sql" of "  - sql: x"), "" when
// none is found.
func keyOnLine(data []byte, line string) string {
	n, _ := strconv.Atoi(line)
	text := strings.TrimSpace(lineOf(data, n))
	text = strings.TrimSpace(strings.TrimPrefix(text, "- "))
	key, _, ok := strings.Cut(text, ":")
	if !ok || strings.ContainsAny(key, " \t{[\"'") {
		return ""
	}
	return key
}

// noDash is yaml.v3's message for a line of a block sequence that is
// neither an item ("- ...") nor indented under one. The line it names is
// where the sequence began (0-based), not the line at fault.
var noDash = regexp.MustCompile(`^yaml: line (\d+): did not find expected '-' indicator$`)

// explainYAML says a decoding error of data in the file's terms: an
// unknown key is named with the keys accepted where it stands (yaml.v3
// says "field step not found in type jobs.Job"), a string given for a
// list says what the list holds, and a mis-indented line is named.
func explainYAML(err error, data []byte) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		if m := badDuration.FindStringSubmatch(err.Error()); m != nil {
			if key := keyOnLine(data, m[1]); key != "" {
				return fmt.Errorf("line %s: %s: %s", m[1], key, m[2])
			}
		}
		if m := noDash.FindStringSubmatch(err.Error()); m != nil {
			if msg := misindented(data, m[1]); msg != "" {
				return errors.New(msg)
			}
		}
		return err
	}
	lines := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := notAList.FindStringSubmatch(e); m != nil {
			lines = append(lines, notAListProblem(data, m[1]))
			continue
		}
		if m := wrongType.FindStringSubmatch(e); m != nil {
			lines = append(lines, wrongTypeProblem(data, m[1], m[2], m[3], m[4]))
			continue
		}
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

// lineOf returns the 1-based line n of data ("" past its end).
func lineOf(data []byte, n int) string {
	lines := strings.Split(string(data), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return strings.TrimRight(lines[n-1], "\r")
}

// notAListProblem says that the key on line (1-based, as yaml.v3 gives
// it) takes a list.
func notAListProblem(data []byte, line string) string {
	n, _ := strconv.Atoi(line)
	key, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lineOf(data, n)), "-")), ":")
	if key == "command" || key == "" {
		return fmt.Sprintf("line %s: command must be a list of the program and its arguments, e.g. "+
			"`command: [psql, -c, \"select 1\"]` (a string is not split into arguments: no shell runs it)", line)
	}
	return fmt.Sprintf("line %s: %s must be a list, e.g. `%s: [a, b]`", line, key, key)
}

// misindented finds the line yaml.v3 stopped at when a block sequence
// that began at line from (0-based, as its message gives it) has a line
// at the indentation of its "-" that is not an item: a key meant for the
// item above but indented less than its other keys. "" when none is found.
func misindented(data []byte, from string) string {
	start, err := strconv.Atoi(from)
	if err != nil {
		return ""
	}
	start++ // 1-based
	seq := lineOf(data, start)
	dash := strings.Index(seq, "- ")
	if dash < 0 || strings.TrimSpace(seq[:dash]) != "" {
		return ""
	}
	item := dash + 2 + len(seq[dash+2:]) - len(strings.TrimLeft(seq[dash+2:], " "))
	total := strings.Count(string(data), "\n") + 1
	for n := start + 1; n <= total; n++ {
		l := lineOf(data, n)
		text := strings.TrimLeft(l, " ")
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		indent := len(l) - len(text)
		switch {
		case indent < dash:
			return ""
		case indent == dash && !strings.HasPrefix(text, "-"):
			first, _, _ := strings.Cut(strings.TrimSpace(seq[dash+2:]), " ")
			return fmt.Sprintf("line %d: %q is indented like the \"-\" at line %d, not like the keys of that list item: "+
				"indent it by %d spaces, like %q (or start a new item with \"- \")",
				n, strings.TrimSpace(text), start, item, first)
		}
	}
	return ""
}

// markExplicitZeros sets the Timeout and StopGrace of the jobs whose file
// gives them as 0 (timeout: 0s) to ExplicitZero, which Validate refuses:
// decoded, 0 is the same as left out.
func markExplicitZeros(doc *yaml.Node, js []Job) {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	list := mappingValue(root, "jobs")
	if list == nil || list.Kind != yaml.SequenceNode {
		return
	}
	for i, jn := range list.Content {
		if i >= len(js) {
			break
		}
		for key, field := range map[string]*connection.Duration{"timeout": &js[i].Timeout, "stop_grace": &js[i].StopGrace} {
			v := mappingValue(jn, key)
			if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
				continue
			}
			var d connection.Duration
			if d.UnmarshalText([]byte(v.Value)) == nil && d == 0 {
				*field = ExplicitZero
			}
		}
	}
}

// mappingValue returns the value of key in mapping node n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
