package client

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

// readEvents reads server-sent events from r and calls fn with each
// event's name and data, until fn says it is done (nil), fn fails (its
// error), or the stream ends (io.ErrUnexpectedEOF) or fails. activity, when
// not nil, is called on every line received, comments included (to reset
// an idle timer). Fields other than event and data (id, retry) and
// comments are ignored.
func readEvents(r io.Reader, activity func(), fn func(event string, data []byte) (done bool, err error)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEventBytes)
	var event string
	var data bytes.Buffer
	for sc.Scan() {
		if activity != nil {
			activity()
		}
		line := sc.Text()
		if line != "" {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				if data.Len() > 0 {
					data.WriteByte('\n')
				}
				data.WriteString(value)
			}
			continue
		}
		// A blank line dispatches the event.
		if event != "" || data.Len() > 0 {
			done, err := fn(event, data.Bytes())
			if err != nil || done {
				return err
			}
		}
		event = ""
		data.Reset()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return io.ErrUnexpectedEOF
}
