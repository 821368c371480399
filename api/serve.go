package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/httpguard"
)

// shutdownTimeout is how long a stopping server waits for requests in
// flight; console streams are told to end at once.
const shutdownTimeout = 5 * time.Second

// ServeUnix serves h on a unix socket at path until ctx ends. It creates
// the parent directory (0750) if needed, replaces a stale socket (but not
// a live one, nor a file that is not a socket), makes the socket 0600
// before it becomes visible at path, and removes it when done. The
// socket's permissions are the authentication: serve h without tokens.
func ServeUnix(ctx context.Context, path string, h http.Handler) error {
	log := slog.Default().With("listener", "unix", "path", path)
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("api socket: create %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o750); err != nil { // whatever the umask
			return fmt.Errorf("api socket: %w", err)
		}
	}
	if err := removeStale(path); err != nil {
		return err
	}
	// Bind under a temporary name, restrict it, then move it into place:
	// nobody can connect in between with the umask's permissions.
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".new")
	if err := removeStale(tmp); err != nil {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return fmt.Errorf("api socket: listen: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return fmt.Errorf("api socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return fmt.Errorf("api socket: %w", err)
	}
	defer func() {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("remove api socket", "err", err)
		}
	}()
	log.Info("api listening")
	// Operators only (the socket's mode): the default timeouts, no cap
	// per source (a unix peer has no address).
	return serve(ctx, ln, h, nil, httpguard.Default, log)
}

// removeStale deletes a socket nobody listens on. A live socket or any
// other kind of file is left alone and reported.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("api socket: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("api socket: %s: another server is listening on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api socket: remove stale %s: %w", path, err)
	}
	return nil
}

// ServeTCP serves h on addr until ctx ends, with TLS when certFile and
// keyFile are both given, within lim (timeouts; connections in all and
// per source address). Serve h with tokens required.
func ServeTCP(ctx context.Context, addr string, h http.Handler, certFile, keyFile string, lim httpguard.Limits) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("api: TLS needs both a certificate and a key file")
	}
	var tlsCfg *tls.Config
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("api: TLS: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen: %w", err)
	}
	log := slog.Default().With("listener", "tcp", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
	log.Info("api listening")
	return serve(ctx, ln, h, tlsCfg, lim, log)
}

// serve runs one server on ln until ctx ends, then shuts it down: new
// connections stop, streams are told to end, requests in flight get
// shutdownTimeout to finish.
func serve(ctx context.Context, ln net.Listener, h http.Handler, tlsCfg *tls.Config, lim httpguard.Limits, log *slog.Logger) error {
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := httpguard.Server(h, lim, log)
	srv.TLSConfig = tlsCfg
	srv.BaseContext = func(net.Listener) context.Context { return base }
	srv.RegisterOnShutdown(cancelBase)
	ln = httpguard.Listen(ln, lim, log)

	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		ln.Close()
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("api shutdown forced", "err", err)
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	log.Info("api stopped")
	return nil
}
