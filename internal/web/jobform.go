package web

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// The job form has two modes holding the same job: fields (one input per
// setting, steps as an ordered list) and YAML (the job as a jobs file, as
// `pgrelay job apply` reads it). Both work without JavaScript: switching
// modes and adding, removing or moving steps are submit buttons (field
// "op") that the server answers by showing the form again, changed and not
// saved; the script does the step operations in the page instead.
const (
	modeFields = "form"
	modeYAML   = "yaml"

	// fieldYAML is the YAML textarea; fieldMode says which mode was shown.
	fieldYAML = "yaml"
	fieldMode = "mode"
	fieldOp   = "op"

	kindSQL     = "sql"
	kindCommand = "command"

	// reservedJobName is the last segment of the new-job form's address.
	reservedJobName = "new"
)

// jobFieldOrder is the order of the job's own fields on the form, for the
// error summary; step fields follow, in step order.
func jobFieldOrder() []string {
	return []string{"name", "connection", "schedule", "timeout", "retries", "stop_grace", "target_schema", "profile", "target", "steps"}
}

// jobFieldLabel is the label of a job field as the form shows it.
func jobFieldLabel(key string) string {
	switch key {
	case "name":
		return "Job name"
	case "connection":
		return "Connection"
	case "schedule":
		return "Schedule"
	case "timeout":
		return "Timeout"
	case "retries":
		return "Retries"
	case "stop_grace":
		return "Stop grace"
	case "target_schema":
		return "Target schema"
	case "profile":
		return "dbt profile"
	case "target":
		return "dbt target"
	case "steps":
		return "Steps"
	case fieldYAML:
		return "YAML"
	case "form":
		return "Form"
	}
	if i, sub, ok := stepField(key); ok {
		l := "Step " + strconv.Itoa(i+1)
		switch sub {
		case "sql":
			l += " SQL"
		case "command":
			l += " program"
		case "args":
			l += " arguments"
		case "workdir":
			l += " working directory"
		case "name":
			l += " name"
		}
		return l
	}
	return key
}

var stepFieldRE = regexp.MustCompile(`^steps\[(\d+)\](?:\.([a-z_]+))?$`)

// stepField splits a step's field key ("steps[1].command") into the step
// index and the sub-field ("" for the step itself).
func stepField(key string) (int, string, bool) {
	m := stepFieldRE.FindStringSubmatch(key)
	if m == nil {
		return 0, "", false
	}
	i, err := strconv.Atoi(m[1])
	if err != nil || i > jobs.MaxSteps*2 {
		return 0, "", false
	}
	return i, m[2], true
}

// jobFieldID is the HTML id of a field's input: "f-schedule",
// "f-steps-1-command" (the program input), "f-steps-1" (the step).
func jobFieldID(key string) string {
	if i, sub, ok := stepField(key); ok {
		id := "f-steps-" + strconv.Itoa(i)
		if sub != "" {
			id += "-" + sub
		}
		return id
	}
	return fieldID(key)
}

// stepForm is one step as typed on the form.
type stepForm struct {
	// Kind is kindSQL or kindCommand.
	Kind    string
	Name    string
	SQL     string
	Program string
	// Args holds the arguments, one per line.
	Args    string
	Workdir string
}

// jobForm is the create/edit form of a job: what was typed and the
// problems found.
type jobForm struct {
	// Edit is true on the edit form of job Name.
	Edit bool
	Name string
	// Mode is modeFields or modeYAML.
	Mode string
	// Values holds the typed values of the job's own fields.
	Values map[string]string
	Steps  []stepForm
	// YAML is the text of the YAML mode.
	YAML string
	// Errors holds the problems by field key ("steps[1].command").
	Errors map[string]string
	// YAMLProblems lists the problems of the YAML mode.
	YAMLProblems []problem
	// Problems lists every problem in form order, for the summary.
	Problems []problem
	// Connections are the saved connections' names, for the select.
	Connections []string
	// Notice explains why the form opened in a mode.
	Notice string
}

func newJobForm() *jobForm {
	return &jobForm{Mode: modeFields, Values: map[string]string{}, Errors: map[string]string{}}
}

// blankJobForm is the form for a new job: one empty SQL step.
func blankJobForm() *jobForm {
	f := newJobForm()
	f.Values["timeout"] = shortDuration(jobs.DefaultTimeout)
	f.Steps = []stepForm{{Kind: kindSQL}}
	f.YAML = exampleYAML
	return f
}

// exampleYAML fills the YAML mode of a new job.
const exampleYAML = `jobs:
  - name: nightly
    connection: warehouse
    schedule: "0 3 * * *"
    timeout: 2h
    steps:
      - sql: create schema if not exists analytics
      - command: [dbt, build, --target, prod]
        workdir: /srv/dbt/project
`

// jobFormFor is the edit form of a saved job. It opens in YAML mode when
// the fields cannot show the job exactly.
func jobFormFor(j jobs.Job) *jobForm {
	f := newJobForm()
	f.Edit, f.Name = true, j.Name
	f.setJob(j)
	if y, err := jobs.Marshal([]jobs.Job{j}); err == nil {
		f.YAML = string(y)
	}
	if !fieldsCanShow(j) {
		f.Mode = modeYAML
		f.Notice = "A command of this job has an empty, blank or multi-line argument, which the fields cannot show: edit it as YAML."
	}
	return f
}

// setJob fills the fields from j, leaving defaults empty so that their
// placeholders show them.
func (f *jobForm) setJob(j jobs.Job) {
	v := map[string]string{
		"name": j.Name, "connection": j.Connection, "schedule": j.Schedule,
		"target_schema": j.TargetSchema, "profile": j.Profile, "target": j.Target,
	}
	if j.Timeout != 0 {
		v["timeout"] = shortDuration(j.Timeout.Duration())
	}
	if j.Retries != 0 {
		v["retries"] = strconv.Itoa(j.Retries)
	}
	if j.StopGrace != 0 {
		v["stop_grace"] = shortDuration(j.StopGrace.Duration())
	}
	if v["profile"] == jobs.DefaultProfile {
		v["profile"] = ""
	}
	if v["target"] == jobs.DefaultTarget {
		v["target"] = ""
	}
	maps.Copy(f.Values, v)
	f.Steps = f.Steps[:0]
	for _, s := range j.Steps {
		sf := stepForm{Kind: kindSQL, Name: s.Name, SQL: s.SQL, Workdir: s.Workdir}
		if len(s.Command) > 0 || s.SQL == "" {
			sf.Kind = kindCommand
			if len(s.Command) > 0 {
				sf.Program = s.Command[0]
				sf.Args = strings.Join(s.Command[1:], "\n")
			}
		}
		f.Steps = append(f.Steps, sf)
	}
}

// fieldsCanShow reports whether the fields show j exactly: every argument
// fits on one line that is not blank (argLines leaves blank lines out).
func fieldsCanShow(j jobs.Job) bool {
	for _, s := range j.Steps {
		if s.SQL != "" && len(s.Command) > 0 {
			return false
		}
		for _, a := range s.Command {
			if strings.TrimSpace(a) == "" || strings.ContainsAny(a, "\r\n") {
				return false
			}
		}
	}
	return true
}

// shortDuration formats d without zero units: "1h", "1h30m", "45s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// field returns the view of one of the job's own fields.
func (f *jobForm) field(key string) fieldView {
	id := jobFieldID(key)
	return fieldView{Key: key, Name: key, ID: id, Value: f.Values[key], Error: f.Errors[key],
		ErrorID: id + "-error", HintID: id + "-hint"}
}

// stepView is what the template needs to render one step.
type stepView struct {
	stepForm
	// Index is the step's position (0-based); Number is 1-based.
	Index, Number int
	// Last is true on the last step (no "move down").
	Last bool
	// ID is the id of the step's fieldset; Error its own problem.
	ID, Error, ErrorID string
	form               *jobForm
}

// Field returns the view of a sub-field of the step: sql, command (the
// program), args, workdir or name.
func (s stepView) Field(sub string) fieldView {
	key := "steps[" + strconv.Itoa(s.Index) + "]." + sub
	v := fieldView{Key: key, Name: key, ID: jobFieldID(key), Error: s.form.Errors[key]}
	switch sub {
	case "sql":
		v.Value = s.SQL
	case "command":
		v.Value = s.Program
	case "args":
		v.Value = s.Args
	case "workdir":
		v.Value = s.Workdir
	case "name":
		v.Value = s.Name
	case "kind":
		v.Value = s.Kind
	}
	v.ErrorID, v.HintID = v.ID+"-error", v.ID+"-hint"
	return v
}

// StepViews returns the steps for the template.
func (f *jobForm) StepViews() []stepView {
	out := make([]stepView, len(f.Steps))
	for i, s := range f.Steps {
		key := "steps[" + strconv.Itoa(i) + "]"
		id := jobFieldID(key)
		out[i] = stepView{stepForm: s, Index: i, Number: i + 1, Last: i == len(f.Steps)-1,
			ID: id, Error: f.Errors[key], ErrorID: id + "-error", form: f}
	}
	return out
}

// TemplateStep is the blank step the script copies to add one; its index
// placeholder is replaced when it is added.
func (f *jobForm) TemplateStep() stepView {
	return stepView{stepForm: stepForm{Kind: kindSQL}, Index: 0, Number: 1, Last: true, ID: "f-steps-0", form: newJobForm()}
}

// AdvancedOpen reports whether the dbt settings start open: when they are
// set or have a problem.
func (f *jobForm) AdvancedOpen() bool {
	for _, k := range []string{"target_schema", "profile", "target"} {
		if f.Values[k] != "" || f.Errors[k] != "" {
			return true
		}
	}
	return false
}

// MissingConnection reports whether the chosen connection is not among the
// saved ones (it was deleted), so that the select still shows it.
func (f *jobForm) MissingConnection() bool {
	c := f.Values["connection"]
	return c != "" && !slices.Contains(f.Connections, c)
}

// readJobForm reads the posted fields of the form mode (or only the YAML
// text in YAML mode). Values that cannot be read (a timeout that is not a
// duration) are recorded as problems.
func readJobForm(r *http.Request, edit bool, name string) (*jobForm, error) {
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("read job form: %w", err)
	}
	f := newJobForm()
	f.Edit, f.Name = edit, name
	if r.PostFormValue(fieldMode) == modeYAML {
		f.Mode = modeYAML
	}
	f.YAML = strings.ReplaceAll(r.PostFormValue(fieldYAML), "\r\n", "\n")
	for _, k := range jobFieldOrder() {
		if k != "steps" {
			f.Values[k] = strings.TrimSpace(r.PostFormValue(k))
		}
	}
	if edit {
		f.Values["name"] = name
	}
	// Steps come as steps[I].kind, steps[I].sql, ...; the indices are
	// taken in order, gaps allowed.
	var idx []int
	for k := range r.PostForm {
		if i, sub, ok := stepField(k); ok && sub == "kind" {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	for _, i := range idx {
		p := "steps[" + strconv.Itoa(i) + "]."
		s := stepForm{
			Kind:    r.PostFormValue(p + "kind"),
			Name:    strings.TrimSpace(r.PostFormValue(p + "name")),
			SQL:     strings.TrimSpace(strings.ReplaceAll(r.PostFormValue(p+"sql"), "\r\n", "\n")),
			Program: strings.TrimSpace(r.PostFormValue(p + "command")),
			Args:    strings.ReplaceAll(r.PostFormValue(p+"args"), "\r\n", "\n"),
			Workdir: strings.TrimSpace(r.PostFormValue(p + "workdir")),
		}
		if s.Kind != kindCommand {
			s.Kind = kindSQL
		}
		f.Steps = append(f.Steps, s)
	}
	return f, nil
}

// job builds the job from the fields, recording what cannot be read:
// values that are not numbers or durations, and steps left empty. Steps
// left entirely blank are dropped when keepBlank is false.
func (f *jobForm) job(keepBlank bool) jobs.Job {
	v := f.Values
	j := jobs.Job{Name: v["name"], Connection: v["connection"], Schedule: v["schedule"],
		TargetSchema: v["target_schema"], Profile: v["profile"], Target: v["target"]}
	if s := v["timeout"]; s != "" {
		d, err := parseDuration(s)
		if err != nil {
			f.Errors["timeout"] = durationProblem(s, err, "30m, 2h or 1h30m")
		}
		j.Timeout = connection.Duration(d)
		if err == nil && d == 0 {
			j.Timeout = jobs.ExplicitZero // refused, not the default
		}
	}
	if s := v["stop_grace"]; s != "" {
		d, err := parseDuration(s)
		if err != nil {
			f.Errors["stop_grace"] = durationProblem(s, err, "10s or 1m")
		}
		j.StopGrace = connection.Duration(d)
		if err == nil && d == 0 {
			j.StopGrace = jobs.ExplicitZero // refused, not the server's
		}
	}
	if s := v["retries"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			f.Errors["retries"] = fmt.Sprintf("%q is not a whole number: accepted is 0 to 10", s)
		}
		j.Retries = n
	}
	for i, s := range f.Steps {
		if !keepBlank && s.blank() {
			continue
		}
		p := "steps[" + strconv.Itoa(i) + "]."
		st := jobs.Step{Name: s.Name}
		if s.Kind == kindCommand {
			if s.Program == "" {
				f.Errors[p+"command"] = "required: the program to run, such as dbt or psql"
			} else {
				st.Command = append([]string{s.Program}, argLines(s.Args)...)
			}
			st.Workdir = s.Workdir
		} else {
			st.SQL = s.SQL
			if s.SQL == "" {
				f.Errors[p+"sql"] = "required: the SQL to run, such as refresh materialized view daily_sales"
			}
		}
		j.Steps = append(j.Steps, st)
	}
	return j
}

// blank reports whether nothing was typed in the step.
func (s stepForm) blank() bool {
	return s.Name == "" && s.SQL == "" && s.Program == "" && strings.TrimSpace(s.Args) == "" && s.Workdir == ""
}

// argLines splits the arguments field: one argument per line, empty lines
// left out.
func argLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimRight(l, "\r")
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// durationProblem says why s, refused by parseDuration with err, is not
// a duration; examples are durations with a unit.
func durationProblem(s string, err error, examples string) string {
	if errors.Is(err, connection.ErrSecondsRange) {
		return fmt.Sprintf("%q is not a duration: accepted is a number of seconds up to %d, or a number with a unit, such as %s", s, connection.MaxSeconds, examples)
	}
	return fmt.Sprintf("%q is not a duration: write a number with a unit, such as %s", s, examples)
}

// parseDuration reads "2h", "1h30m" or a number of seconds.
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		d, err := connection.FromSeconds(n)
		if err != nil {
			return 0, fmt.Errorf("parse duration %q: %w", s, err)
		}
		return d.Duration(), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse duration %q: %w", s, err)
	}
	return d, nil
}

// validate checks the job as the use case will (but for the connection's
// existence), so that a form with unreadable fields shows every other
// problem at once.
func (f *jobForm) validate(j jobs.Job) {
	j.ApplyDefaults()
	var ve *fielderr.Error
	if err := j.Validate(); errors.As(err, &ve) {
		f.addProblems(ve.Problems)
		return
	}
	f.summarize()
}

// addProblems records validation problems, keeping problems found while
// reading the form, and builds the summary. In YAML mode every problem is
// listed at the YAML text.
func (f *jobForm) addProblems(probs []fielderr.Problem) {
	for _, p := range probs {
		if f.Mode == modeYAML {
			f.YAMLProblems = append(f.YAMLProblems, problem{ID: jobFieldID(fieldYAML), Label: yamlFieldLabel(p.Field), Message: p.Problem})
			continue
		}
		key := p.Field
		// A step's own problem about its content lands on the input the
		// kind of step uses. A step left empty has its problem there
		// already, found while reading the form ("required: ..."): the
		// same problem in YAML's words would only repeat it.
		if i, sub, ok := stepField(key); ok && sub == "" && i < len(f.Steps) {
			empty := f.Steps[i].SQL == ""
			if f.Steps[i].Kind == kindCommand {
				key += ".command"
				empty = f.Steps[i].Program == ""
			} else {
				key += ".sql"
			}
			if _, taken := f.Errors[key]; taken {
				if empty {
					continue
				}
				key = p.Field
			}
		}
		if _, ok := f.Errors[key]; !ok {
			f.Errors[key] = p.Problem
		}
	}
	f.summarize()
}

// yamlFieldLabel names a field of a problem found in the YAML text:
// "jobs[0](nightly).steps[1].command" becomes "steps[1].command".
func yamlFieldLabel(field string) string {
	if rest, ok := strings.CutPrefix(field, "jobs[0]"); ok {
		if strings.HasPrefix(rest, "(") {
			if i := strings.Index(rest, ")"); i >= 0 {
				rest = rest[i+1:]
			}
		}
		field = strings.TrimPrefix(rest, ".")
	}
	if field == "" {
		return "YAML"
	}
	return field
}

// summarize builds the error summary in form order: the job's fields, then
// the steps in order, then the YAML problems.
func (f *jobForm) summarize() {
	f.Problems = f.Problems[:0]
	order := jobFieldOrder()
	rank := func(k string) (int, int, int) {
		if i := slices.Index(order, k); i >= 0 {
			return i, 0, 0
		}
		if i, sub, ok := stepField(k); ok {
			subs := []string{"", "name", "sql", "command", "args", "workdir"}
			return len(order), i, slices.Index(subs, sub)
		}
		return len(order) + 1, 0, 0
	}
	keys := slices.Collect(maps.Keys(f.Errors))
	slices.SortFunc(keys, func(a, b string) int {
		a1, a2, a3 := rank(a)
		b1, b2, b3 := rank(b)
		switch {
		case a1 != b1:
			return a1 - b1
		case a2 != b2:
			return a2 - b2
		case a3 != b3:
			return a3 - b3
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		id := ""
		if i, _, ok := stepField(k); ok && i < len(f.Steps) || slices.Contains(order, k) || k == fieldYAML {
			id = jobFieldID(k)
			if k == "steps" {
				id = "steps-title"
			}
		}
		f.Problems = append(f.Problems, problem{ID: id, Label: jobFieldLabel(k), Message: f.Errors[k]})
	}
	f.Problems = append(f.Problems, f.YAMLProblems...)
}

// parseYAML reads the YAML mode's text: a jobs file with exactly one job,
// or one job without the `jobs:` list around it.
func (f *jobForm) parseYAML() (jobs.Job, bool) {
	text := f.YAML
	if strings.TrimSpace(text) == "" {
		f.yamlProblem("", "required: the job as YAML, such as the example in the YAML tab of a new job")
		return jobs.Job{}, false
	}
	if !hasJobsKey(text) {
		text = wrapJob(text)
	}
	js, err := jobs.ParseFile(strings.NewReader(text))
	var ve *fielderr.Error
	switch {
	case errors.As(err, &ve):
		f.addProblems(ve.Problems)
		return jobs.Job{}, false
	case err != nil:
		f.yamlProblem("", strings.TrimPrefix(err.Error(), "jobs file: "))
		return jobs.Job{}, false
	case len(js) != 1:
		f.yamlProblem("", fmt.Sprintf("holds %d jobs: this form edits one; apply several at once with pgrelay job apply -f FILE", len(js)))
		return jobs.Job{}, false
	}
	j := js[0]
	if f.Edit && j.Name != f.Name {
		f.yamlProblem("name", fmt.Sprintf("%q differs from this job's name, %s: jobs cannot be renamed; create the new one and delete this one", j.Name, f.Name))
		return jobs.Job{}, false
	}
	return j, true
}

func (f *jobForm) yamlProblem(field, msg string) {
	f.addProblems([]fielderr.Problem{{Field: field, Problem: msg}})
}

// hasJobsKey reports whether text has a top-level `jobs:` key.
func hasJobsKey(text string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "jobs:") {
			return true
		}
	}
	return false
}

// wrapJob turns one job's YAML mapping into a jobs file.
func wrapJob(text string) string {
	var b strings.Builder
	b.WriteString("jobs:\n")
	first := true
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		switch {
		case first && strings.TrimSpace(l) != "" && !strings.HasPrefix(strings.TrimSpace(l), "#"):
			b.WriteString("  - " + l + "\n")
			first = false
		case l == "":
			b.WriteString("\n")
		default:
			b.WriteString("    " + l + "\n")
		}
	}
	return b.String()
}

// applyOp carries out a form operation that changes the form without
// saving it: switching modes, adding, removing and moving steps. It
// reports whether op was one.
func (f *jobForm) applyOp(op string) bool {
	switch {
	case op == "" || op == "save":
		return false
	case op == "mode-"+modeYAML:
		if f.Mode == modeYAML {
			return true
		}
		j := f.job(false)
		if len(f.Errors) > 0 {
			f.Errors["form"] = "fix these fields first: the YAML would not hold what you typed"
			f.summarize()
			return true
		}
		if reflect.DeepEqual(j, jobs.Job{}) {
			f.YAML, f.Mode = exampleYAML, modeYAML // nothing typed yet: start from the example
			return true
		}
		y, err := jobs.Marshal([]jobs.Job{j})
		if err != nil {
			f.Errors["form"] = "the job could not be written as YAML: " + err.Error()
			f.summarize()
			return true
		}
		f.YAML, f.Mode = string(y), modeYAML
	case op == "mode-"+modeFields:
		if f.Mode == modeFields {
			return true
		}
		j, ok := f.parseYAML()
		if !ok {
			return true
		}
		if !fieldsCanShow(j) {
			f.yamlProblem("", "a command has an empty, blank or multi-line argument, which the fields cannot show: keep editing it as YAML")
			return true
		}
		f.setJob(j)
		f.Mode = modeFields
	case op == "add-"+kindSQL || op == "add-"+kindCommand:
		if len(f.Steps) < jobs.MaxSteps {
			f.Steps = append(f.Steps, stepForm{Kind: strings.TrimPrefix(op, "add-")})
		}
	default:
		verb, n, ok := strings.Cut(op, "-")
		i, err := strconv.Atoi(n)
		if !ok || err != nil || i < 0 || i >= len(f.Steps) {
			return true
		}
		switch verb {
		case "remove":
			f.Steps = slices.Delete(f.Steps, i, i+1)
		case "up":
			if i > 0 {
				f.Steps[i-1], f.Steps[i] = f.Steps[i], f.Steps[i-1]
			}
		case "down":
			if i+1 < len(f.Steps) {
				f.Steps[i], f.Steps[i+1] = f.Steps[i+1], f.Steps[i]
			}
		}
	}
	return true
}

// saveError records the problem of a failed save on the form; it
// reports false for errors that are not the user's to fix.
func (f *jobForm) saveError(err error, name string) bool {
	var ve *app.ValidationError
	switch {
	case errors.As(err, &ve):
		f.addProblems(ve.Problems)
	case errors.Is(err, app.ErrExists):
		f.addProblems([]fielderr.Problem{{Field: "name", Problem: fmt.Sprintf(
			"a job named %q already exists: choose another name, or edit that one", name)}})
	default:
		return false
	}
	return true
}
