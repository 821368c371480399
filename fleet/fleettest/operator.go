package fleettest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Operator is a NATS operator (JWT) setup, the only mode in which
// nats-server accepts a .creds file: one trusted operator, its system
// account, and an account (JetStream enabled) that signs the users.
type Operator struct {
	// JWT is the operator's JWT (nats-server's operator setting).
	JWT string
	// SystemAccount is the system account's public key.
	SystemAccount string
	// Accounts are the account JWTs by public key (resolver_preload).
	Accounts map[string]string
	// Creds is a credentials file (user JWT and NKey seed, as nsc
	// writes them), mode 600, of a user of the trusted account: it may
	// connect.
	Creds string
	// ForeignCreds is one of a user of an account of another operator,
	// which the server does not trust: it may not.
	ForeignCreds string
}

// NewOperator makes an operator setup for t.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	op, opJWT := operator(t)
	sys, sysJWT := account(t, op, false)
	acc, accJWT := account(t, op, true)
	otherOp, _ := operator(t)
	otherAcc, _ := account(t, otherOp, true)
	return &Operator{
		JWT: opJWT, SystemAccount: publicKey(t, sys),
		Accounts: map[string]string{publicKey(t, sys): sysJWT, publicKey(t, acc): accJWT},
		Creds:    userCreds(t, acc, "fleet"), ForeignCreds: userCreds(t, otherAcc, "foreign"),
	}
}

// RunOperatorNATS starts an in-process JetStream server for t that
// trusts op, and returns its URL.
func RunOperatorNATS(t testing.TB, op *Operator) string {
	t.Helper()
	res := &server.MemAccResolver{}
	for pub, j := range op.Accounts {
		if err := res.Store(pub, j); err != nil {
			t.Fatal(err)
		}
	}
	oc, err := jwt.DecodeOperatorClaims(op.JWT)
	if err != nil {
		t.Fatal(err)
	}
	return runServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: res, SystemAccount: op.SystemAccount})
}

func operator(t testing.TB) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	c := jwt.NewOperatorClaims(publicKey(t, kp))
	c.Name = "fleettest"
	j, err := c.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	return kp, j
}

// account makes an account signed by op, with JetStream if js.
func account(t testing.TB, op nkeys.KeyPair, js bool) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	c := jwt.NewAccountClaims(publicKey(t, kp))
	if js {
		c.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	}
	j, err := c.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	return kp, j
}

// userCreds writes a credentials file, mode 600, of a new user of acc.
func userCreds(t testing.TB, acc nkeys.KeyPair, name string) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	c := jwt.NewUserClaims(publicKey(t, kp))
	c.Name = name
	j, err := c.Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(j, seed)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func publicKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
