package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jsonesc"
)

// CheckCursor refuses an after cursor past the log's last record (a
// *fielderr.Error of the field after_seq): an export from there wrote
// nothing and gave it back as the next cursor, so that the records
// appended later with numbers up to it (a typo, a cursor of another store
// or of one restored from an older backup) were never exported.
func CheckCursor(ctx context.Context, r Reader, after int64) error {
	if after <= 0 {
		return nil
	}
	c, err := r.AuditChain(ctx)
	if err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	if after > c.HeadSeq {
		return fielderr.New(fielderr.Request, fielderr.Problem{Field: "after_seq", Problem: fmt.Sprintf(
			"%d is past the last record of the audit log, %d: accepted is 0 (the whole log) to %d, "+
				"such as the seq of the last record an earlier export of this log wrote", after, c.HeadSeq, c.HeadSeq)})
	}
	return nil
}

// Export writes the records after sequence number after (and at or after
// since, when set), oldest first, as JSON lines (one record per line, the
// form SIEMs ingest) to w. It returns the last sequence number written,
// or after when none was: the cursor of the next export. A cursor past
// the last record is refused (see CheckCursor).
//
// Records quote text that others wrote (a detail, a command's arguments):
// their C1 controls and DEL are written as \u escapes (jsonesc.Controls),
// so that none acts on a terminal showing the export. The hash chain is
// over the records' canonical encoding, not these bytes: the lines decode
// to the same records and verify alike.
func Export(ctx context.Context, r Reader, w io.Writer, after int64, since time.Time) (int64, error) {
	if err := CheckCursor(ctx, r, after); err != nil {
		return after, err
	}
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
