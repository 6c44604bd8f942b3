package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/elapsed"
)

func (r *runner) connTestCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "test NAME",
		Short: "Test a connection hop by hop and say which hop fails, why, and how to fix it",
		Long: `Test a connection step by step, the way a real connection goes:
  through a bastion: resolve, bastion_tcp, ssh_handshake, ssh_auth, forward,
                     tls, postgres_auth, database, query
  through a chain of hops: bastion_tcp, ssh_handshake and ssh_auth for each hop,
                     named "hop 2 of 3 (bastion-b:22): ssh_auth" (resolve only for
                     the first: a further hop's name is resolved by the hop before)
  direct:            resolve, tcp, tls, postgres_auth, database, query
Each step prints as it finishes, with its time; a failed step shows the error and a
hint naming the likely cause and the fix. Steps after a failure are skipped.
The first SSH handshake of a tunnelled connection pins the bastion's host key (even
when the login after it fails); a passing ssh_auth records that the bastion accepted
the connection's key (connection show: Key login).
Exit code 0 only when every step passed.`,
		Example: `  pgrelay connection test wh
  pgrelay connection test wh -o json | jq '.steps[] | select(.status == "failed")'`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			tb, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			name := args[0]
			// A connection that does not exist is an error, not a test.
			if _, err := tb.GetConnection(cmd.Context(), name); err != nil {
				return err
			}
			var progress func(diagnose.Step)
			if output == "text" {
				fmt.Fprintf(r.out(), "Testing connection %q:\n", name)
				progress = func(s diagnose.Step) { printStep(r.out(), s) }
			}
			rep, err := tb.TestConnection(cmd.Context(), name, progress)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeJSON(r.out(), struct {
					Connection string `json:"connection"`
					*diagnose.Report
				}{name, rep}); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(r.out(), testSummary(rep))
			}
			if f := rep.Failed(); f != nil {
				r.printProgramStderr(f.Err)
				return &exitCodeError{code: exitFailure, msg: fmt.Sprintf("connection %s failed its test at %s", name, f.Name())}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// stepMark is the symbol of a step's status.
func stepMark(s diagnose.Status) string {
	switch s {
	case diagnose.StatusOK:
		return "✓"
	case diagnose.StatusFailed:
		return "✗"
	}
	return "–"
}

// durationWidth is the width of the time column of `connection test`:
// every duration of a step ("< 0.01 ms", "412 ms", "3 min 12 s") fits, so
// the details start in one column.
const durationWidth = 10

// printStep prints one step: mark, id, time and detail, then the error and
// hint of a failure (or the hint of a passed step). Their text may quote a
// server (its version, its error): control characters are written out.
func printStep(w io.Writer, s diagnose.Step) {
	s.Detail, s.Error, s.Hint = showControls(s.Detail), showControls(s.Error), showControls(s.Hint)
	dur := "-"
	if s.Status != diagnose.StatusSkipped {
		dur = elapsed.FormatMS(s.DurationMS)
	}
	// A failed step has no detail: its error follows on the next line.
	fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %s %-13s %*s  %s", stepMark(s.Status), s.Name(), durationWidth, dur, s.Detail), " "))
	if s.Error != "" {
		printIndented(w, "error: ", s.Error)
	}
	if s.Hint != "" {
		printIndented(w, "hint:  ", s.Hint)
	}
}

// printIndented prints a labelled, possibly multi-line text under a step.
func printIndented(w io.Writer, label, text string) {
	const indent = "      "
	for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if i == 0 {
			fmt.Fprintf(w, "%s%s%s\n", indent, label, line)
		} else {
			fmt.Fprintf(w, "%s%s%s\n", indent, strings.Repeat(" ", len(label)), line)
		}
	}
}

// testSummary is the line after the steps: all passed, or where it failed.
func testSummary(rep *diagnose.Report) string {
	if f := rep.Failed(); f != nil {
		passed := 0
		for _, s := range rep.Steps {
			if s.Status == diagnose.StatusOK {
				passed++
			}
		}
		// The error may quote the server, as printStep's does.
		return fmt.Sprintf("Failed at %s: %s (%d of %d steps passed, %s)", f.Name(), showControls(f.Error), passed, len(rep.Steps),
			elapsed.FormatMS(rep.DurationMS))
	}
	var passed int
	var notRequested []string
	for _, s := range rep.Steps {
		if s.Status == diagnose.StatusOK {
			passed++
		} else {
			notRequested = append(notRequested, s.Name())
		}
	}
	sum := fmt.Sprintf("All %d steps passed in %s", passed, elapsed.FormatMS(rep.DurationMS))
	if len(notRequested) > 0 {
		sum += fmt.Sprintf(" (not requested: %s)", strings.Join(notRequested, ", "))
	}
	return sum + "."
}
