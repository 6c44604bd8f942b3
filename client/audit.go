package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
)

// ListAudit returns audit records, newest first (admin only).
func (c *Client) ListAudit(ctx context.Context, f apiwire.AuditFilter) ([]apiwire.AuditRecord, error) {
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	for k, v := range map[string]string{"actor": f.Actor, "target": f.Target, "action": f.Action} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.BeforeSeq > 0 {
		q.Set("before_seq", strconv.FormatInt(f.BeforeSeq, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	u := c.endpoint("audit")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var l apiwire.AuditList
	if err := c.do(ctx, request{method: http.MethodGet, url: u, out: &l, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return l.Records, nil
}

// VerifyAudit has the server verify its audit log's hash chain (admin
// only).
func (c *Client) VerifyAudit(ctx context.Context) (*apiwire.AuditVerification, error) {
	var v apiwire.AuditVerification
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("audit", "verify"), out: &v,
		accepted: http.StatusOK, timeout: 10 * time.Minute}); err != nil {
		return nil, err
	}
	return &v, nil
}

// ExportAudit copies the records after afterSeq (and at or after since)
// as JSON lines to w, and returns the last sequence number written (admin
// only).
func (c *Client) ExportAudit(ctx context.Context, w io.Writer, afterSeq int64, since time.Time) (int64, error) {
	q := url.Values{"after_seq": {strconv.FormatInt(afterSeq, 10)}}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	op := "GET " + apiwire.Prefix + "/audit/export"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint("audit", "export")+"?"+q.Encode(), nil)
	if err != nil {
		return afterSeq, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return afterSeq, fmt.Errorf("%s on pgrelay server %s: %w", op, c.base.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return afterSeq, c.responseError(op, resp, data)
	}
	last := afterSeq
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var rec struct {
			Seq int64 `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return last, fmt.Errorf("%s: line after record %d: %w", op, last, err)
		}
		if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
			return last, err
		}
		last = rec.Seq
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("%s: %w", op, err)
	}
	return last, nil
}
