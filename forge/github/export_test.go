package github

import "time"

// SetResponseHeaderTimeout shortens the forge connection's wait for
// headers, so that a test's message poll can outlast it; set it before
// the client's pools are made.
func SetResponseHeaderTimeout(c *Client, d time.Duration) { c.conn.ResponseHeaderTimeout = d }

// SetBeforeScaleSetCreate makes f run before the pool's scale set is
// created; set it before the pool is used.
func SetBeforeScaleSetCreate(p *Pool, f func()) { p.ss.beforeCreate = f }

// SetNow makes now the clock of the pool's forge's demand view (the
// reconciler's rounds and what they and deliveries record).
func SetNow(p *Pool, now func() time.Time) { p.c.now = now }
