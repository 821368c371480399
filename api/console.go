package api

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"time"
)

// consolePoll is how often a followed console log is checked for new
// bytes and for its end.
var consolePoll = 200 * time.Millisecond

// console serves a VM's serial console log as text: ?tail=N for the last
// N lines (default all), ?follow=1 to keep streaming what the VM writes
// until the client goes away or the VM ends (its log file is gone).
func (s *server) console(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	tail := -1
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tail %q: want a number of lines >= 0", v))
			return
		}
		tail = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("follow %q: want 1 or 0", v))
			return
		}
		follow = b
	}

	path, err := s.b.ConsoleLog(id)
	if err != nil {
		s.backendError(w, r, err)
		return
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("vm %q: no console log yet", id))
		return
	}
	if err != nil {
		s.backendError(w, r, fmt.Errorf("vm %q: console log: %w", id, err))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.backendError(w, r, fmt.Errorf("vm %q: console log: %w", id, err))
		return
	}
	var off int64
	if tail >= 0 {
		if off, err = tailOffset(f, fi.Size(), tail); err != nil {
			s.backendError(w, r, fmt.Errorf("vm %q: console log: %w", id, err))
			return
		}
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		s.backendError(w, r, fmt.Errorf("vm %q: console log: %w", id, err))
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if follow {
		h.Set("X-Accel-Buffering", "no") // tell proxies not to buffer the stream
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, f); err != nil || !follow {
		return
	}

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives any server write timeout
	_ = rc.SetReadDeadline(time.Time{})  // nor any read timeout
	if err := rc.Flush(); err != nil {
		return
	}
	t := time.NewTicker(consolePoll)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		// Look for the end before copying, so the bytes written just
		// before the file went away are still sent.
		gone := !sameFile(path, fi)
		if err := rewindIfTruncated(f); err != nil {
			return
		}
		n, err := io.Copy(w, f)
		if err != nil {
			return
		}
		if n > 0 {
			if err := rc.Flush(); err != nil {
				return
			}
		}
		if gone {
			return
		}
	}
}

// sameFile reports whether path still names the file we opened.
func sameFile(path string, opened fs.FileInfo) bool {
	fi, err := os.Stat(path)
	return err == nil && os.SameFile(fi, opened)
}

// rewindIfTruncated starts over when the file got shorter than what was
// already sent (it was truncated in place).
func rewindIfTruncated(f *os.File) error {
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < pos {
		_, err = f.Seek(0, io.SeekStart)
	}
	return err
}

// tailOffset returns where the last n lines of the first size bytes of f
// begin. A final newline ends the last line rather than starting another.
func tailOffset(f io.ReaderAt, size int64, n int) (int64, error) {
	if n == 0 {
		return size, nil
	}
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	count := 0
	for end := size; end > 0; {
		start := max(0, end-chunk)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != '\n' || start+int64(i) == size-1 {
				continue
			}
			if count++; count == n {
				return start + int64(i) + 1, nil
			}
		}
		end = start
	}
	return 0, nil
}
