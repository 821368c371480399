// Package forgehttp makes the HTTP connection of one configured forge
// (a forges entry): the transport and client every forge driver (GitHub,
// Gitea, GitLab) talks to its forge through, so that the CA file, the
// proxy from the environment, the TLS floor, the timeouts and the idle
// connections are set in one place and alike for every forge.
//
// It holds no retry: the drivers' retries differ in kind (GitHub's
// transport waits out GitHub's rate-limit headers and retries every
// method whose body rewinds; GitLab's client library retries only
// idempotent calls, with its own backoff; Gitea's calls are not
// retried). It imports no forge driver; the drivers import it.
package forgehttp

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// Timeouts and idle-connection settings of every forge connection.
const (
	DialTimeout = 10 * time.Second
	// KeepAlive is the TCP keep-alive period of a connection.
	KeepAlive           = 30 * time.Second
	TLSHandshakeTimeout = 10 * time.Second
	// ResponseHeaderTimeout bounds the wait for a response's headers
	// when Options.Timeout does not.
	ResponseHeaderTimeout = 30 * time.Second
	IdleConnTimeout       = 90 * time.Second
	MaxIdleConns          = 100
	// MaxIdleConnsPerHost is high because one forge is one host that
	// every pool's calls share.
	MaxIdleConnsPerHost = 16
)

// Options are the settings of a forge entry the connection takes.
type Options struct {
	// CAFile holds extra PEM roots for the forge's TLS certificate,
	// added to the system's; empty: the system's alone.
	CAFile string
	// Timeout bounds a whole request, body included (the Client's
	// Timeout, and the transport's wait for headers); 0: no bound on
	// the Client (a driver that bounds each attempt itself, as
	// GitHub's does) and ResponseHeaderTimeout on the headers.
	Timeout time.Duration
}

// Conn is the HTTP connection of one forge.
type Conn struct {
	// Transport is the connection's transport, for a driver that wraps
	// it (GitHub's retries and rate limits).
	Transport *http.Transport
	// Client sends over Transport, bounded by Options.Timeout.
	Client *http.Client
	// CA is the PEM read from Options.CAFile; nil without one. A
	// driver whose runners talk to the forge too hands it to them.
	CA []byte
}

// New reads and checks the CA file and returns the forge's connection.
// A CA file that cannot be read or holds no PEM certificate is an error
// naming the file.
func New(o Options) (*Conn, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	var ca []byte
	if o.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(o.CAFile); err != nil {
			return nil, fmt.Errorf("ca_file %s: %w", o.CAFile, err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = roots
	}
	headers := ResponseHeaderTimeout
	if o.Timeout > 0 {
		headers = o.Timeout
	}
	dialer := &net.Dialer{Timeout: DialTimeout, KeepAlive: KeepAlive}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   TLSHandshakeTimeout,
		ResponseHeaderTimeout: headers,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          MaxIdleConns,
		MaxIdleConnsPerHost:   MaxIdleConnsPerHost,
		IdleConnTimeout:       IdleConnTimeout,
	}
	return &Conn{Transport: tr, Client: &http.Client{Transport: tr, Timeout: o.Timeout}, CA: ca}, nil
}
