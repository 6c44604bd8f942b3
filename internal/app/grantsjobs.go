package app

import (
	"context"
	"fmt"
	"regexp"

	"github.com/pgrelay/pgrelay/internal/grants"
)

// createSchemaRE finds CREATE SCHEMA in a SQL step (with or without IF NOT
// EXISTS, in any case).
var createSchemaRE = regexp.MustCompile(`(?i)\bcreate\s+schema\b`)

// schemaCreation fills in req.CreateSchemas from the jobs that run on the
// connection: a SQL step running CREATE SCHEMA needs CREATE on the
// database even when the schema exists.
func (s *Service) schemaCreation(ctx context.Context, connection string, req *grants.Request) error {
	if req.CreateSchemas {
		return nil
	}
	js, err := s.store.ListJobs(ctx)
	if err != nil {
		return fmt.Errorf("grants of %s: list jobs: %w", connection, err)
	}
	for _, jr := range js {
		j := jr.Job
		if j.Connection != connection {
			continue
		}
		for i, st := range j.Steps {
			if st.SQL != "" && createSchemaRE.MatchString(st.SQL) {
				req.CreateSchemas = true
				req.CreateSchemasWhy = fmt.Sprintf("job %s runs CREATE SCHEMA in step %d", j.Name, i+1)
				return nil
			}
		}
	}
	return nil
}
