// Package fielderr is the error of input with problems in named fields:
// every problem found at once, each with the field it is about, under a
// subject that says what the input was ("invalid connection", "invalid
// job"). Fields are paths in the input's JSON or YAML form, such as
// "ssh_tunnel.host" or "jobs[0](nightly).steps[1].sql"; each face names
// them in its own words (the CLI maps connection fields to its flags, the
// web UI to its form fields, the API returns them as they are).
package fielderr

import (
	"fmt"
	"strings"
)

// Subjects of the errors pgrelay returns.
const (
	Connection = "invalid connection"
	Job        = "invalid job"
	Token      = "invalid token"
	Request    = "invalid request"
	// SSHCA is the subject of a bad list of the principals pgrelay's SSH
	// CA may sign for.
	SSHCA = "invalid SSH CA principals"
)

// Problem is one problem with one field.
type Problem struct {
	// Field is the path of the field, e.g. "port" or "ssh_tunnel.host".
	Field string `json:"field"`
	// Problem says what is wrong and what is accepted.
	Problem string `json:"problem"`
}

// Error lists every problem found in an input at once.
type Error struct {
	// Subject says what was invalid, e.g. "invalid job" (Job); empty is
	// Request.
	Subject  string
	Problems []Problem
}

// New returns an Error of subject with the problems.
func New(subject string, problems ...Problem) *Error {
	return &Error{Subject: subject, Problems: problems}
}

// SubjectOrDefault returns the subject, Request when none was set.
func (e *Error) SubjectOrDefault() string {
	if e.Subject == "" {
		return Request
	}
	return e.Subject
}

// Error lists the problems, one per line after the first.
func (e *Error) Error() string { return e.Format(func(f string) string { return f }) }

// Format lists the problems with each field named by name (a face's word
// for it, such as a flag).
func (e *Error) Format(name func(field string) string) string {
	if len(e.Problems) == 1 {
		p := e.Problems[0]
		return e.SubjectOrDefault() + ": " + name(p.Field) + ": " + p.Problem
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%d problems):", e.SubjectOrDefault(), len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + name(p.Field) + ": " + p.Problem)
	}
	return b.String()
}

// Fields returns the problems as a map from field to problem.
func (e *Error) Fields() map[string]string {
	m := make(map[string]string, len(e.Problems))
	for _, p := range e.Problems {
		m[p.Field] = p.Problem
	}
	return m
}

// Prefixed returns the problems with prefix put before each field (e.g.
// "jobs[2](nightly)." for the problems of one job of a file).
func (e *Error) Prefixed(prefix string) []Problem {
	out := make([]Problem, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = Problem{Field: prefix + p.Field, Problem: p.Problem}
	}
	return out
}
