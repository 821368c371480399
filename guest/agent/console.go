package agent

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// console serialises whole lines onto the serial console, from the agent
// and from the runner's output, which are written concurrently.
type console struct {
	mu     sync.Mutex
	w      io.Writer
	uptime func() time.Duration
}

func newConsole(w io.Writer, uptime func() time.Duration) *console {
	if w == nil {
		w = io.Discard
	}
	return &console{w: w, uptime: uptime}
}

// logf writes "[agent +1.234s] message", the time being since boot.
func (c *console) logf(format string, args ...any) {
	line := fmt.Sprintf("[agent +%.3fs] %s\n", c.uptime().Seconds(), fmt.Sprintf(format, args...))
	c.write([]byte(line))
}

// line writes prefix, text and a newline as one write.
func (c *console) line(prefix string, text []byte) {
	b := make([]byte, 0, len(prefix)+len(text)+1)
	b = append(append(append(b, prefix...), text...), '\n')
	c.write(b)
}

func (c *console) write(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.Write(b) // nowhere to report a console that fails
}
