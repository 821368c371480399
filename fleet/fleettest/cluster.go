package fleettest

import (
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
	ports := make([]int, n)
	routes := make([]*url.URL, n)
	for i := range ports {
		ports[i] = freePort(t)
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])}
	}
	c := &Cluster{}
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, Authorization: Token,
			Cluster: server.ClusterOpts{Name: "fleettest", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
		c.Servers = append(c.Servers, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !c.ready() {
		if time.Now().After(deadline) {
			t.Fatal("nats cluster: no JetStream meta leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range c.Servers {
		c.urls = append(c.urls, s.ClientURL())
	}
	return c
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

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
