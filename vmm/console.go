package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// DefaultConsoleMaxBytes caps a VM's serial console log when the spec
// sets no cap (config: console_logs.max_kib).
const DefaultConsoleMaxBytes int64 = 1 << 20

// minConsoleMaxBytes is the smallest cap a log is kept at, whatever asked.
const minConsoleMaxBytes int64 = 4096

// A guest with root can write its serial port as fast as the monitor
// emulates it, for as long as its job runs. The monitor's console output
// therefore never goes to the log file directly: it goes into a pipe read
// by a console keeper, a small process of our own binary (re-executed,
// see init) that keeps the log within its cap. The keeper is its own
// process, not a goroutine of the orchestrator, so a VM adopted across an
// orchestrator restart keeps its console log; it ends when the monitor
// (the pipe's only writer) is gone.
//
// A log over its cap keeps its head (the boot: kernel, jailer and VMM
// complaints) and its most recent bytes, with a line saying how much was
// dropped between them. The cap bounds the file at every moment; the
// monitor is never blocked for long (the keeper drains the pipe even when
// its file cannot be written), so a flooding guest slows only itself.

// keeperEnv, when set, makes a process started from our binary the
// console keeper of the log it inherits as fd 3, with the cap in bytes as
// the value; its stdin is the monitor's console pipe.
const keeperEnv = "FIREACTIONS_CONSOLE_KEEPER"

func init() {
	if v := os.Getenv(keeperEnv); v != "" {
		os.Exit(runKeeper(v))
	}
}

func runKeeper(arg string) int {
	limit, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return 2
	}
	f := os.NewFile(3, "console")
	if f == nil {
		return 2
	}
	w, err := NewConsoleWriter(f, limit)
	if err != nil {
		w = nil
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := os.Stdin.Read(buf)
		if n > 0 && w != nil {
			_, _ = w.Write(buf[:n]) // a full disk drops console bytes, never blocks the VM
		}
		if rerr != nil {
			if errors.Is(rerr, syscall.EINTR) {
				continue
			}
			return 0
		}
	}
}

// OpenConsole creates (or opens) the console log at path, capped at limit
// bytes (0 or less: DefaultConsoleMaxBytes), and returns the file a
// monitor writes its console to: give it as the monitor's stdout and
// stderr, then close it once the monitor has started.
func OpenConsole(path string, limit int64) (*os.File, error) {
	c, err := StartConsole(path, limit)
	if err != nil {
		return nil, err
	}
	return c.W, nil
}

// Console is a console log's keeper, started by StartConsole.
type Console struct {
	// W is the file a monitor writes its console to (see OpenConsole).
	W *os.File
	// done is closed once the keeper has ended: every writer of the
	// pipe is gone and all they wrote is in the log.
	done chan struct{}
}

// Done is closed once the keeper has ended: every writer of its pipe
// (the monitor, W) is gone and what they wrote is in the log. Read the
// log of a monitor that failed after Done, or miss its last words.
func (c *Console) Done() <-chan struct{} { return c.done }

// StartConsole is OpenConsole, with its keeper's end to wait for.
func StartConsole(path string, limit int64) (*Console, error) {
	if limit <= 0 {
		limit = DefaultConsoleMaxBytes
	}
	log, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	defer r.Close()
	keeper := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{"fireactions-console-keeper", path},
		Env:        []string{keeperEnv + "=" + strconv.FormatInt(limit, 10)},
		Stdin:      r,
		ExtraFiles: []*os.File{log},
		// Its own process group, as the monitors: a signal to the
		// orchestrator's group does not end a log a restart adopts.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := keeper.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start console keeper: %w", err)
	}
	c := &Console{W: w, done: make(chan struct{})}
	go func() {
		_ = keeper.Wait()
		close(c.done)
	}()
	return c, nil
}

// ConsoleWriter appends to a console log and keeps it within its cap: the
// first bytes written (an eighth of the cap) stay, then a line counting the
// bytes dropped, then the most recent bytes. It is the only writer of the
// file.
type ConsoleWriter struct {
	f         *os.File
	max, head int64
	size      int64 // of the file
	dropped   int64
	compacted bool
}

// NewConsoleWriter writes to f (open for reading and writing, not
// appending), after what it already holds, capped at limit bytes.
func NewConsoleWriter(f *os.File, limit int64) (*ConsoleWriter, error) {
	limit = max(limit, minConsoleMaxBytes)
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &ConsoleWriter{f: f, max: limit, head: limit / 8, size: fi.Size()}, nil
}

const consoleMarkFormat = "\n[fireactions: %20d bytes of console output dropped here, over the log's cap of %20d bytes]\n"

var consoleMarkLen = int64(len(fmt.Sprintf(consoleMarkFormat, 0, 0)))

func (c *ConsoleWriter) tailBudget() int64 { return c.max - c.head - consoleMarkLen }

// Write implements io.Writer; it always takes all of p.
func (c *ConsoleWriter) Write(p []byte) (int, error) {
	n := len(p)
	if c.size > c.max { // a file over the cap before we started
		if err := c.compact(); err != nil {
			return 0, err
		}
	}
	step := max(c.tailBudget()/2, 1)
	for len(p) > 0 {
		chunk := p[:min(int64(len(p)), step)]
		if c.size+int64(len(chunk)) > c.max {
			if err := c.compact(); err != nil {
				return 0, err
			}
		}
		m, err := c.f.WriteAt(chunk, c.size)
		c.size += int64(m)
		if err != nil {
			c.resync()
			return 0, err
		}
		p = p[len(chunk):]
	}
	return n, nil
}

// compact keeps the head and the last half of the tail's room, making room
// for at least as much again.
func (c *ConsoleWriter) compact() error {
	tailStart := c.head + consoleMarkLen
	keep := c.tailBudget() / 2
	from := c.size - keep
	bodyStart := c.head
	if c.compacted {
		bodyStart = tailStart
	}
	if from < tailStart { // nothing to drop yet; cannot happen with Write's steps
		return nil
	}
	c.dropped += from - bodyStart
	buf := make([]byte, 64<<10)
	for done := int64(0); done < keep; {
		n, err := c.f.ReadAt(buf[:min(int64(len(buf)), keep-done)], from+done)
		if n > 0 {
			if _, werr := c.f.WriteAt(buf[:n], tailStart+done); werr != nil {
				c.resync()
				return werr
			}
			done += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			c.resync()
			return err
		}
	}
	if _, err := c.f.WriteAt([]byte(fmt.Sprintf(consoleMarkFormat, c.dropped, c.max)), c.head); err != nil {
		c.resync()
		return err
	}
	if err := c.f.Truncate(tailStart + keep); err != nil {
		c.resync()
		return err
	}
	c.size, c.compacted = tailStart+keep, true
	return nil
}

// resync takes the file's size as it is after a failed write.
func (c *ConsoleWriter) resync() {
	if fi, err := c.f.Stat(); err == nil {
		c.size = fi.Size()
	}
}

// CopyConsole copies the console log src to dst (created, mode 0600),
// within limit bytes (0 or less: DefaultConsoleMaxBytes): a longer log keeps
// its head and its end, with a line counting what was left out between.
func CopyConsole(dst, src string, limit int64) error {
	if limit <= 0 {
		limit = DefaultConsoleMaxBytes
	}
	limit = max(limit, minConsoleMaxBytes)
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	size := fi.Size()
	if size <= limit {
		_, err = io.Copy(out, io.LimitReader(in, limit))
	} else {
		w := &ConsoleWriter{max: limit}
		w.head = w.max / 8
		tail := w.tailBudget()
		if _, err = io.Copy(out, io.NewSectionReader(in, 0, w.head)); err == nil {
			if _, err = fmt.Fprintf(out, consoleMarkFormat, size-w.head-tail, w.max); err == nil {
				_, err = io.Copy(out, io.NewSectionReader(in, size-tail, tail))
			}
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
