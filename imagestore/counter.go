package imagestore

import (
	"io"
	"net/http"
	"sync/atomic"
)

// counter counts the bytes registries send during one pull: what a
// progress line shows, and what the image records as pulled.
type counter struct{ n atomic.Int64 }

func (c *counter) transport(inner http.RoundTripper) http.RoundTripper {
	return countingTransport{inner: inner, c: c}
}

type countingTransport struct {
	inner http.RoundTripper
	c     *counter
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if resp != nil && resp.Body != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, c: t.c}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	c *counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.n.Add(int64(n))
	return n, err
}
