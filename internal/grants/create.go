package grants

import "fmt"

// databaseCreate is the check of CREATE on the database (see the package
// documentation for when it is needed); granted says whether the role has
// it, exists whether the target schema does.
func (a *auditor) databaseCreate(db, target string, exists, granted bool) Check {
	req := a.res.Request
	c := Check{ObjectType: ObjectDatabase, Name: db, Privilege: "CREATE", Status: status(granted)}
	switch {
	case !exists:
		c.Note = fmt.Sprintf("needed to create the target schema %s, which does not exist yet", Display(target))
	case req.CreateSchemas:
		why := req.CreateSchemasWhy
		if why == "" {
			why = "the workload creates schemas"
		}
		c.Note = "needed: " + why + "; CREATE SCHEMA needs it even with IF NOT EXISTS and for a schema that exists"
	case !granted:
		c.Status = NotNeeded
		c.Note = fmt.Sprintf("the target schema %s exists, and dbt creates only schemas that are missing. "+
			"A step that runs CREATE SCHEMA (even IF NOT EXISTS) or dbt models with custom schemas need it: "+
			"check again with the workload's schema creation included", Display(target))
	}
	return c
}
