package forgehttp

import (
	"fmt"
	"net/url"
)

// BaseURL parses a forges[] entry's url: an absolute http or https URL
// with a host, what every driver joins its API paths to.
func BaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("url %q is not an absolute http(s) URL", raw)
	}
	return u, nil
}
