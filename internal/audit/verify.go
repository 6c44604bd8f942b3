package audit

import (
	"context"
	"fmt"
)

// Reader reads the log in sequence order, for Verify and exports.
type Reader interface {
	// AuditChain returns the chain's anchor and head.
	AuditChain(ctx context.Context) (Chain, error)
	// AuditAfter returns up to limit records with Seq > after, in
	// sequence order.
	AuditAfter(ctx context.Context, after int64, limit int) ([]Record, error)
}

// Verification is the result of Verify.
type Verification struct {
	// OK is true when every record is intact and the chain is whole.
	OK bool `json:"ok"`
	// Records is how many records were checked.
	Records int64 `json:"records"`
	// Chain is the chain's state as stored.
	Chain Chain `json:"chain"`
	// Broken, when not OK, is the sequence number of the first broken
	// record: changed, missing (the first number absent), or following a
	// changed or missing one.
	Broken int64 `json:"broken,omitempty"`
	// Problem says what is wrong with it.
	Problem string `json:"problem,omitempty"`
}

// Error describes a failed verification.
func (v *Verification) Error() string {
	return fmt.Sprintf("audit log broken at record %d: %s", v.Broken, v.Problem)
}

// verifyPage is how many records Verify reads at a time.
const verifyPage = 1000

// Verify reads the whole log and checks each record's hash and its link to
// the record before, from the chain's anchor to its head. It stops at the
// first broken record. The error is for a log that could not be read.
func Verify(ctx context.Context, r Reader) (*Verification, error) {
	chain, err := r.AuditChain(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	v := &Verification{Chain: chain}
	wantSeq, prev := chain.AnchorSeq+1, chain.AnchorHash
	after := chain.AnchorSeq
	broken := func(seq int64, format string, args ...any) (*Verification, error) {
		v.Broken, v.Problem = seq, fmt.Sprintf(format, args...)
		return v, nil
	}
	if after > 0 {
		// Records up to the anchor were deleted by retention: one left
		// behind is a sign of a tampered anchor.
		if recs, err := r.AuditAfter(ctx, 0, 1); err != nil {
			return nil, fmt.Errorf("verify audit log: %w", err)
		} else if len(recs) > 0 && recs[0].Seq <= chain.AnchorSeq {
			return broken(recs[0].Seq, "it is older than the chain's anchor (record %d, the last one retention deleted)", chain.AnchorSeq)
		}
	}
	for {
		recs, err := r.AuditAfter(ctx, after, verifyPage)
		if err != nil {
			return nil, fmt.Errorf("verify audit log: %w", err)
		}
		for i := range recs {
			rec := &recs[i]
			if rec.Seq != wantSeq {
				return broken(wantSeq, "it is missing (the next record is %d): records were deleted", rec.Seq)
			}
			if rec.PrevHash != prev {
				return broken(rec.Seq, "its previous-record hash does not match record %d: the record before it was changed or deleted", rec.Seq-1)
			}
			norm := *rec
			norm.Normalize()
			if got := ComputeHash(&norm); got != rec.Hash {
				return broken(rec.Seq, "its content does not match its hash: it was changed")
			}
			v.Records++
			prev, wantSeq, after = rec.Hash, rec.Seq+1, rec.Seq
		}
		if len(recs) < verifyPage {
			break
		}
	}
	if after != chain.HeadSeq || prev != chain.HeadHash {
		if after < chain.HeadSeq {
			return broken(after+1, "it is missing: the chain's head is record %d: the newest records were deleted", chain.HeadSeq)
		}
		return broken(after, "the chain's head (record %d) does not match the last record", chain.HeadSeq)
	}
	v.OK = true
	return v, nil
}
