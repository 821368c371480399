package fleettest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is n in-process JetStream servers joined by cluster routes (a
// JetStream cluster, as a fleet's three-node NATS), each requiring Token.
type Cluster struct {
	Servers []*server.Server
	urls    []string
}

// RunCluster starts an n-node JetStream cluster for t and waits until
// it has a meta leader and every node is current.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := startCluster(n, func() (string, error) { return t.TempDir(), nil })
	if c != nil {
		t.Cleanup(c.Shutdown)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startCluster starts n nodes, each storing under a fresh dir(), and
// waits for the cluster to be ready. On error the nodes it started are
// in the returned cluster, for the caller to shut down.
func startCluster(n int, dir func() (string, error)) (*Cluster, error) {
	routes := make([]*url.URL, n)
	ports := make([]int, n)
	for i := range n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)}
	}
	c := &Cluster{}
	for i := range n {
		d, err := dir()
		if err != nil {
			return c, err
		}
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: d, NoLog: true, NoSigs: true, Authorization: Token,
			Cluster: server.ClusterOpts{Name: "fleettest", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		})
		if err != nil {
			return c, fmt.Errorf("nats cluster node %d: %w", i+1, err)
		}
		go s.Start()
		c.Servers = append(c.Servers, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !c.ready() {
		if time.Now().After(deadline) {
			return c, errors.New("nats cluster: no JetStream meta leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range c.Servers {
		c.urls = append(c.urls, s.ClientURL())
	}
	return c, nil
}

// ready: a live node leads the JetStream meta group and every live node
// is current.
func (c *Cluster) ready() bool {
	leader := false
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		if !s.ReadyForConnections(10*time.Millisecond) || !s.JetStreamIsCurrent() {
			return false
		}
		leader = leader || s.JetStreamIsLeader()
	}
	return leader
}

// URLs are the client URLs of every node, killed ones included (a
// client is configured with all of them).
func (c *Cluster) URLs() []string { return c.urls }

// Kill stops node i at once, as a lost machine.
func (c *Cluster) Kill(i int) { c.Servers[i].Shutdown() }

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("reserve a port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
