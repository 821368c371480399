package fleettest

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
)

// DropReplies makes the relay drop the next n replies the server sends
// to a client's request inbox (a MSG or HMSG to an _INBOX subject) whose
// payload, headers included, contains match: the server did what was
// asked, its answer is lost on the way, as a network fault would lose it.
func (p *Proxy) DropReplies(n int, match string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop, p.dropMatch = n, []byte(match)
}

// Dropped is how many replies the relay dropped so far.
func (p *Proxy) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// relayFromServer copies the server's protocol to the client frame by
// frame, leaving out the replies DropReplies asks to drop.
func (p *Proxy) relayFromServer(dst io.Writer, src io.Reader) error {
	r := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return err
		}
		f := strings.Fields(string(line))
		var payload []byte
		if len(f) >= 4 && (f[0] == "MSG" || f[0] == "HMSG") {
			size, err := strconv.Atoi(f[len(f)-1])
			if err != nil || size < 0 {
				return err
			}
			payload = make([]byte, size+2) // and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return err
			}
			if strings.HasPrefix(f[1], "_INBOX.") && p.dropThis(payload) {
				continue
			}
		}
		if _, err := dst.Write(append(line, payload...)); err != nil {
			return err
		}
	}
}

func (p *Proxy) dropThis(payload []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drop <= 0 || !bytes.Contains(payload, p.dropMatch) {
		return false
	}
	p.drop--
	p.dropped++
	return true
}
