package github

import "time"

// SetResponseHeaderTimeout shortens the forge connection's wait for
// headers, so that a test's message poll can outlast it; set it before
// the client's pools are made.
func SetResponseHeaderTimeout(c *Client, d time.Duration) { c.conn.ResponseHeaderTimeout = d }
