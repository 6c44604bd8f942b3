package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/pgrelay/pgrelay/internal/jsonesc"
)

// Export writes the records after sequence number after (and at or after
// since, when set), oldest first, as JSON lines (one record per line, the
// form SIEMs ingest) to w. It returns the last sequence number written,
// or after when none was: the cursor of the next export.
//
// Records quote text that others wrote (a detail, a command's arguments):
// their C1 controls and DEL are written as \u escapes (jsonesc.Controls),
// so that none acts on a terminal showing the export. The hash chain is
// over the records' canonical encoding, not these bytes: the lines decode
// to the same records and verify alike.
func Export(ctx context.Context, r Reader, w io.Writer, after int64, since time.Time) (int64, error) {
	bw := bufio.NewWriter(w)
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
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
			line.Reset()
			if err := enc.Encode(&recs[i]); err != nil {
				return after, fmt.Errorf("export audit log: %w", err)
			}
			if _, err := bw.Write(jsonesc.Controls(line.Bytes())); err != nil {
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
