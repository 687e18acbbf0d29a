package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"chatcluster/internal/testenv"
)

// wantACL fails the test unless the znode at p has the cluster's ACL.
func wantACL(t *testing.T, conn *zk.Conn, c *Cluster, p string) {
	t.Helper()
	acl, _, err := conn.GetACL(p)
	if err != nil || !sameACL(acl, c.acl) {
		t.Fatalf("ACL of %s = %s, %v; want %s", p, aclString(acl), err, aclString(c.acl))
	}
}

// With a credential, a node's registration and the leader's election
// znode (and their parents) admit only the cluster's identity: a client
// without the credential, or with another one, can read them but neither
// delete them nor add znodes beside them, and the cluster goes on as if
// nothing happened.
func TestACLKeepsOthersOut(t *testing.T) {
	e := newAuthEnv(t)
	n1, n2 := e.started("n1", nil), e.started("n2", nil)
	l := waitAgreed(t, 2, n1, n2)
	if l.ID != "n1" {
		t.Fatalf("leader = %+v, want n1", l)
	}
	if _, err := n1.ClaimTerm(context.Background(), l.Epoch); err != nil {
		t.Fatal(err)
	}
	leaderZnode, _ := ownElection(n1)
	reg := e.root + "/nodes/n1"
	elect := e.root + "/election/" + leaderZnode

	own := e.rawAuth(e.cred)
	defer own.Close()
	for _, p := range []string{e.root, e.root + "/nodes", e.root + "/election", e.root + "/term", reg, elect, e.root + "/nodes/n2"} {
		wantACL(t, own, n1, p)
	}

	anon, wrong := e.raw(), e.rawAuth(randomCred(t))
	defer anon.Close()
	defer wrong.Close()
	for name, conn := range map[string]*zk.Conn{"no credential": anon, "another credential": wrong} {
		t.Run(name, func(t *testing.T) {
			denied := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, zk.ErrNoAuth) {
					t.Errorf("%s: %v, want %v", what, err, zk.ErrNoAuth)
				}
			}
			denied("delete the registration", conn.Delete(reg, -1))
			denied("delete the leader's election znode", conn.Delete(elect, -1))
			_, err := conn.Create(e.root+"/nodes/intruder", []byte(`{"id":"intruder"}`), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
			denied("register a node", err)
			_, err = conn.Create(e.root+"/election/n_", nil, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
			denied("enter the election", err)
			_, err = conn.Set(reg, []byte(`{"id":"n1","peer":"evil:1"}`), -1)
			denied("rewrite the registration", err)
			_, err = conn.Set(e.root+"/term", []byte(`{"term":99}`), -1)
			denied("rewrite the term", err)
			_, err = conn.SetACL(e.root+"/nodes", zk.WorldACL(zk.PermAll), -1)
			denied("open the members' parent", err)
			denied("delete the term", conn.Delete(e.root+"/term", -1))

			// Reading stays open, for monitoring.
			if data, _, err := conn.Get(reg); err != nil || string(data) != string(n1.selfData) {
				t.Errorf("read the registration: %q, %v", data, err)
			}
			if names, _, err := conn.Children(e.root + "/election"); err != nil || len(names) != 2 {
				t.Errorf("list the election: %v, %v", names, err)
			}
		})
	}

	// Nothing changed, and the cluster still takes a new member.
	if got := waitAgreed(t, 2, n1, n2); got != l {
		t.Fatalf("leader after the attempts = %+v, want %+v", got, l)
	}
	if ok, _, err := own.Exists(reg); err != nil || !ok {
		t.Fatalf("registration after the attempts: %v, %v", ok, err)
	}
	n3 := e.started("n3", nil)
	if got := waitAgreed(t, 3, n1, n2, n3); got != l {
		t.Fatalf("leader with n3 = %+v, want %+v", got, l)
	}
}

// A node whose session expires registers again under the ACL: its new
// session holds the credential too (only that identity may create under
// <root>/nodes).
func TestACLAfterSessionExpiry(t *testing.T) {
	e := newAuthEnv(t)
	p := testenv.NewProxy(t, e.servers[0])
	n1 := e.started("n1", viaProxy(p))
	n2 := e.started("n2", nil)
	waitAgreed(t, 2, n1, n2)
	old := n1.State().Session

	p.Blackhole()
	testenv.WaitFor(t, testTimeout, "n1's session expires (n2 sees it leave)", func() bool {
		return len(n2.State().Members) == 1
	})
	p.Restore()
	testenv.WaitFor(t, testTimeout, "n1 registered again with a new session", func() bool {
		_, ok := agreed(2, n1, n2)
		return ok && n1.State().Session != old
	})
	own := e.rawAuth(e.cred)
	defer own.Close()
	_, stat, err := own.Exists(e.root + "/nodes/n1")
	if err != nil || stat.EphemeralOwner != n1.State().Session {
		t.Fatalf("nodes/n1 owner %x, %v; want the new session %x", stat.EphemeralOwner, err, n1.State().Session)
	}
	wantACL(t, own, n1, e.root+"/nodes/n1")
	znode, _ := ownElection(n1)
	wantACL(t, own, n1, e.root+"/election/"+znode)
}

// A cluster that ran without a credential is secured by its first node
// that has one: the persistent znodes get the cluster's ACL, once.
func TestACLMendsWorldWritable(t *testing.T) {
	e := newEnv(t)
	open := e.started("n1", nil)
	l := waitAgreed(t, 1, open)
	if _, err := open.ClaimTerm(context.Background(), l.Epoch); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := open.Close(ctx); err != nil {
		t.Fatal(err)
	}
	anon := e.raw()
	defer anon.Close()
	for _, p := range []string{e.root, e.root + "/nodes", e.root + "/election", e.root + "/term"} {
		if acl, _, err := anon.GetACL(p); err != nil || !worldWritable(acl) {
			t.Fatalf("ACL of %s after a run without credential = %s, %v; want world-writable", p, aclString(acl), err)
		}
	}

	e.cred = randomCred(t)
	var mu sync.Mutex
	setACLs := 0
	countSetACL := func(c *Config) {
		c.Observe = func(op string, _ time.Duration, _ error) {
			if op == "setacl" {
				mu.Lock()
				setACLs++
				mu.Unlock()
			}
		}
	}
	secured := e.started("n1", countSetACL)
	waitAgreed(t, 1, secured)
	own := e.rawAuth(e.cred) // ZooKeeper shows a digest's hash only to that identity
	defer own.Close()
	for _, p := range []string{e.root, e.root + "/nodes", e.root + "/election", e.root + "/term", e.root + "/nodes/n1"} {
		wantACL(t, own, secured, p)
	}
	if err := anon.Delete(e.root+"/nodes/n1", -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Fatalf("delete of the registration without credential: %v, want %v", err, zk.ErrNoAuth)
	}
	mu.Lock()
	if setACLs != 4 {
		t.Errorf("%d ACLs set, want 4 (root, nodes, election, term)", setACLs)
	}
	setACLs = 0
	mu.Unlock()

	// Idempotent: the next node finds nothing to mend.
	n2 := e.started("n2", countSetACL)
	waitAgreed(t, 2, secured, n2)
	mu.Lock()
	defer mu.Unlock()
	if setACLs != 0 {
		t.Errorf("a second node set %d ACLs, want none", setACLs)
	}
}

// A node with another credential, or none, cannot join a cluster whose
// znodes have an ACL: Start fails at once and says why.
func TestACLWrongCredentialFailsStart(t *testing.T) {
	e := newAuthEnv(t)
	n1 := e.started("n1", nil)
	waitAgreed(t, 1, n1)

	for name, cred := range map[string]Credential{"another credential": randomCred(t), "no credential": {}} {
		t.Run(name, func(t *testing.T) {
			c := e.node("n2", func(c *Config) { c.Auth = cred })
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			err := c.Start(ctx)
			if !errors.Is(err, ErrAccess) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Start = %v, want ErrAccess", err)
			}
			if cred.IsZero() && !strings.Contains(err.Error(), "no ZooKeeper credential") ||
				!cred.IsZero() && !strings.Contains(err.Error(), cred.User) {
				t.Errorf("Start error does not say what is wrong: %v", err)
			}
			t.Logf("%s: %v", name, err)
		})
	}
	if s := n1.State(); len(s.Members) != 1 || !s.IsLeader {
		t.Fatalf("n1 = %+v, want the only member, leading", s)
	}
}

// With a chroot every znode lives under it, the root below: nothing is
// written outside it, and the chroot is created, with the ACL, if missing.
func TestChroot(t *testing.T) {
	e := newAuthEnv(t)
	chroot := e.root + "/prod"
	id := "c" + strings.TrimPrefix(e.root, "/") // unique: shows that nothing lands outside the chroot
	inChroot := func(c *Config) { c.Chroot, c.Root = chroot, "/chat" }
	n1 := e.started(id, inChroot)
	n2 := e.started("n2", inChroot)
	l := waitAgreed(t, 2, n1, n2)
	if l.ID != id {
		t.Fatalf("leader = %+v, want %s", l, id)
	}
	if term, err := n1.ClaimTerm(context.Background(), l.Epoch); err != nil || term != 1 {
		t.Fatalf("ClaimTerm = %d, %v; want 1", term, err)
	}
	if got, err := n2.CurrentLeader(context.Background()); err != nil || got != l {
		t.Fatalf("CurrentLeader = %+v, %v; want %+v", got, err, l)
	}

	conn := e.rawAuth(e.cred)
	defer conn.Close()
	base := chroot + "/chat"
	if data, _, err := conn.Get(base + "/nodes/" + id); err != nil || string(data) != string(n1.selfData) {
		t.Fatalf("%s/nodes/%s = %q, %v", base, id, data, err)
	}
	if names, _, err := conn.Children(base + "/election"); err != nil || len(names) != 2 {
		t.Fatalf("%s/election = %v, %v; want both nodes", base, names, err)
	}
	for _, p := range []string{e.root, chroot, base, base + "/nodes", base + "/election", base + "/term"} {
		wantACL(t, conn, n1, p)
	}
	names, _, err := conn.Children(chroot)
	if err != nil || len(names) != 1 || names[0] != "chat" {
		t.Fatalf("children of the chroot = %v, %v; want only the root", names, err)
	}
	for _, p := range []string{"/chat/nodes/" + id, "/prod/chat/nodes/" + id, "/" + id} {
		if ok, _, err := conn.Exists(p); err != nil || ok {
			t.Fatalf("%s exists outside the chroot (%v, %v)", p, ok, err)
		}
	}
}
