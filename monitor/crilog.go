package monitor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// MaxLogLine is where a long line is cut into partial records, as kubelet
// and containerd do (16 KiB).
const MaxLogLine = 16 << 10

// Stream names used in CRI log records.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// LogWriter writes container output to a file in the CRI log format that
// kubelet parses: "<RFC3339Nano time> <stream> <P|F> <text>\n". Records of
// both streams are serialised, each written with one write call so a reader
// never sees half a record.
type LogWriter struct {
	path string
	mu   sync.Mutex
	file *os.File
	now  func() time.Time
}

// OpenLog opens (appending to) the log file at path. An empty path discards
// output, as a container created without a log path asks.
func OpenLog(path string) (*LogWriter, error) {
	w := &LogWriter{path: path, now: time.Now}
	if err := w.Reopen(); err != nil {
		return nil, err
	}
	return w, nil
}

// Reopen closes the current file and opens the path again: kubelet renames
// the file when it rotates logs, then asks for a reopen.
func (w *LogWriter) Reopen() error {
	if w.path == "" {
		return nil
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log %s: %w", w.path, err)
	}
	w.mu.Lock()
	old := w.file
	w.file = f
	w.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file.
func (w *LogWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file == nil {
		return nil
	}
	err := w.file.Close()
	w.file = nil
	return err
}

func (w *LogWriter) record(stream string, partial bool, text []byte) error {
	tag := "F"
	if partial {
		tag = "P"
	}
	ts := w.now().UTC().Format(time.RFC3339Nano)
	buf := make([]byte, 0, len(ts)+len(stream)+len(text)+5)
	buf = append(buf, ts...)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, text...)
	buf = append(buf, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file == nil {
		return nil
	}
	_, err := w.file.Write(buf)
	return err
}

// Copy reads one stream until EOF and writes its lines as records; a line
// longer than MaxLogLine becomes partial records. Each chunk read is handed
// to tee (attached clients) as soon as it arrives, before any line is
// complete: an interactive prompt has no newline. A log write error does not
// stop the copy, so the container never blocks on a full pipe.
func (w *LogWriter) Copy(stream string, r io.Reader, tty bool, tee func([]byte)) error {
	buf := make([]byte, 32<<10)
	var pending []byte
	var firstErr error
	emit := func(partial bool, text []byte) {
		if err := w.record(stream, partial, text); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if tee != nil {
				tee(buf[:n])
			}
			pending = append(pending, buf[:n]...)
			consumed := 0
			for {
				rest := pending[consumed:]
				if i := bytes.IndexByte(rest, '\n'); i >= 0 && i <= MaxLogLine {
					line := rest[:i]
					if tty {
						line = bytes.TrimSuffix(line, []byte{'\r'})
					}
					emit(false, line)
					consumed += i + 1
				} else if len(rest) > MaxLogLine {
					emit(true, rest[:MaxLogLine])
					consumed += MaxLogLine
				} else {
					break
				}
			}
			// Keep only the unfinished line, at the front of the buffer.
			pending = pending[:copy(pending, pending[consumed:])]
		}
		if err != nil {
			// EOF, a closed pipe, or EIO from a pty master whose last slave
			// closed: the stream has ended. Text left is its complete last line.
			if len(pending) > 0 {
				emit(false, pending)
			}
			return firstErr
		}
	}
}
