package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Export writes the records after sequence number after (and at or after
// since, when set), oldest first, as JSON lines (one record per line, the
// form SIEMs ingest) to w. It returns the last sequence number written,
// or after when none was: the cursor of the next export.
func Export(ctx context.Context, r Reader, w io.Writer, after int64, since time.Time) (int64, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for {
		recs, err := r.AuditAfter(ctx, after, verifyPage)
		if err != nil {
			return after, fmt.Errorf("export audit log: %w", err)
		}
		for i := range recs {
			if !since.IsZero() && recs[i].Time.Before(since) {
				after = recs[i].Seq
				continue
			}
			if err := enc.Encode(&recs[i]); err != nil {
				return after, fmt.Errorf("export audit log: %w", err)
			}
			after = recs[i].Seq
		}
		if err := bw.Flush(); err != nil {
			return after, fmt.Errorf("export audit log: %w", err)
		}
		if len(recs) < verifyPage {
			return after, nil
		}
	}
}
