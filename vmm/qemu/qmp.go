package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// qmp is one connection to a QEMU's machine protocol socket (-qmp): the
// driver stops, saves, restores and resumes a guest through it.
type qmp struct {
	conn net.Conn
	r    *bufio.Reader
}

// maxQMPLine bounds one QMP message the driver reads.
const maxQMPLine = 1 << 20

// dialQMP connects to the socket at path and leaves capability
// negotiation, as every QMP client must before its first command.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
	}
	q := &qmp{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := q.read(); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("qmp: greeting: %w", err)
	}
	if _, err := q.do(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) Close() error { return q.conn.Close() }

type qmpMessage struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

func (q *qmp) read() (qmpMessage, error) {
	var m qmpMessage
	line, err := q.r.ReadSlice('\n')
	if err != nil {
		return m, err
	}
	if len(line) > maxQMPLine {
		return m, fmt.Errorf("message longer than %d bytes", maxQMPLine)
	}
	return m, json.Unmarshal(line, &m)
}

// do runs one command and returns its "return" value; events that arrive
// meanwhile are skipped.
func (q *qmp) do(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	stop := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if m.Event != "" {
			continue
		}
		if m.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		return m.Return, nil
	}
}

// status is QEMU's run state (query-status): "running", "paused",
// "inmigrate", "postmigrate", ...
func (q *qmp) status(ctx context.Context) (string, error) {
	b, err := q.do(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	return s.Status, json.Unmarshal(b, &s)
}

// migration is the state of the last migration (query-migrate):
// "active", "completed", "failed", ...
func (q *qmp) migration(ctx context.Context) (string, string, error) {
	b, err := q.do(ctx, "query-migrate", nil)
	if err != nil {
		return "", "", err
	}
	var s struct {
		Status string `json:"status"`
		Error  string `json:"error-desc"`
	}
	return s.Status, s.Error, json.Unmarshal(b, &s)
}
