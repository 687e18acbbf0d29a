package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-zookeeper/zk"
)

// clusterACL is the ACL of every znode the cluster creates: with a
// credential, every permission for its digest identity and READ for
// everyone (so that monitoring and zkCli can look without it; the znodes
// hold addresses and counters, no secrets); without one, everything for
// everyone, as ZooKeeper's default.
func clusterACL(cred Credential) []zk.ACL {
	if cred.IsZero() {
		return zk.WorldACL(zk.PermAll)
	}
	return append(zk.DigestACL(zk.PermAll, cred.User, cred.Password), zk.WorldACL(zk.PermRead)...)
}

// worldWritable reports whether acl lets anyone do more than read: the ACL
// of a znode created without credentials.
func worldWritable(acl []zk.ACL) bool {
	return slices.ContainsFunc(acl, func(a zk.ACL) bool {
		return a.Scheme == "world" && a.ID == "anyone" && a.Perms&^zk.PermRead != 0
	})
}

// sameACL reports whether a and b hold the same entries, in any order.
func sameACL(a, b []zk.ACL) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(x zk.ACL) bool { return !slices.Contains(b, x) })
}

// persistentPaths returns the persistent znodes of a cluster under chroot
// and root, from the top down:
//
//   - parents: every component of <chroot><root>, then its nodes and
//     election znodes: what must exist before a node registers;
//   - owned: those that belong to the cluster, whose ACL Start mends: the
//     chroot and everything below it (without a chroot, the root itself),
//     and the term znode. The components above the chroot (or above the
//     root) may be shared with others and are left alone once they exist.
func persistentPaths(chroot, root string) (parents, owned []string) {
	base := chroot + root
	var p string
	for _, part := range strings.Split(strings.TrimPrefix(base, "/"), "/") {
		p += "/" + part
		parents = append(parents, p)
	}
	from := len(parents) - 1
	if chroot != "" {
		from = strings.Count(chroot, "/") - 1
	}
	owned = slices.Clone(parents[from:])
	parents = append(parents, base+"/nodes", base+"/election")
	owned = append(owned, base+"/nodes", base+"/election", base+"/term")
	return parents, owned
}

// authenticate adds the credential to the ZooKeeper client once: the
// client sends it again, before any other request, on every connection it
// opens later, also for a new session after an expiry. Called by the loop
// owner with a live session, before any request that writes.
func (c *Cluster) authenticate() error {
	ls := &c.ls
	if c.cfg.Auth.IsZero() || ls.authed {
		return nil
	}
	for range 3 {
		gen := c.dialGen()
		if err := c.conn.AddAuth("digest", c.cfg.Auth.auth()); err != nil {
			return fmt.Errorf("cluster: authenticate as %q: %w", c.cfg.Auth.User, err)
		}
		// The client keeps the credential once the answer is in. A
		// connection it opened meanwhile may have sent the kept ones
		// before that, without this one: add it again, on that one.
		if c.dialGen() == gen {
			break
		}
	}
	ls.authed = true
	c.log.Debug().Str("zk_user", c.cfg.Auth.User).Msg("authenticated to ZooKeeper")
	return nil
}

// secure gives the cluster's ACL to each of its persistent znodes (see
// persistentPaths) that is still world-writable, as a run without
// credentials left it; once per Cluster, before the node registers. It is
// idempotent: a znode with the cluster's ACL is not touched, and neither
// is one with any other ACL that is not world-writable (an operator's own
// choice, e.g. a chroot prepared by an administrator). A znode missing
// now is created with the cluster's ACL later. Called by the loop owner.
func (c *Cluster) secure() error {
	ls := &c.ls
	if c.cfg.Auth.IsZero() || ls.secured {
		return nil
	}
	for _, p := range c.owned {
		if err := c.secureOne(p); err != nil {
			return err
		}
	}
	ls.secured = true
	return nil
}

func (c *Cluster) secureOne(p string) error {
	for range 5 {
		acl, stat, err := c.conn.GetACL(p)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			return nil
		case err != nil:
			return fmt.Errorf("cluster: read the ACL of %s: %w", p, err)
		case sameACL(acl, c.acl):
			return nil
		case !worldWritable(acl):
			c.log.Info().Str("znode", p).Str("acl", aclString(acl)).
				Msg("znode has an ACL this cluster did not set and that is not world-writable: left as it is")
			return nil
		}
		_, err = c.conn.SetACL(p, c.acl, stat.Aversion)
		switch {
		case err == nil:
			c.log.Warn().Str("znode", p).Str("old_acl", aclString(acl)).Str("acl", aclString(c.acl)).
				Msg("replaced the world-writable ACL of a znode of this cluster (left by a run without ZooKeeper credentials)")
			return nil
		case errors.Is(err, zk.ErrBadVersion):
			continue // changed meanwhile: look again
		case errors.Is(err, zk.ErrNoNode):
			return nil
		case errors.Is(err, zk.ErrNoAuth):
			return fmt.Errorf("%w: %s is world-writable (%s) but does not let this node change its ACL: set it by hand to %s (zkCli setAcl), or delete it",
				ErrAccess, p, aclString(acl), aclString(c.acl))
		default:
			return fmt.Errorf("cluster: set the ACL of %s: %w", p, err)
		}
	}
	return fmt.Errorf("cluster: set the ACL of %s: it keeps changing", p)
}

// denied turns a ZooKeeper NoAuth error into one wrapping ErrAccess that
// says what to do; other errors are returned as they are.
func (c *Cluster) denied(err error) error {
	if err == nil || errors.Is(err, ErrAccess) || !errors.Is(err, zk.ErrNoAuth) {
		return err
	}
	if c.cfg.Auth.IsZero() {
		return fmt.Errorf("%w: %v: the cluster's znodes have an ACL and this node has no ZooKeeper credential: give it the one the other nodes have", ErrAccess, err)
	}
	return fmt.Errorf("%w: %v: the ACL of the cluster's znodes does not admit this node's ZooKeeper credential (user %q; another password is another identity): every node of a cluster needs the same one", ErrAccess, err, c.cfg.Auth.User)
}

// aclString shows an ACL the way zkCli writes one: scheme:id:perms, ...
func aclString(acl []zk.ACL) string {
	parts := make([]string, len(acl))
	for i, a := range acl {
		var perms []byte
		for _, p := range []struct {
			bit int32
			c   byte
		}{{zk.PermCreate, 'c'}, {zk.PermDelete, 'd'}, {zk.PermRead, 'r'}, {zk.PermWrite, 'w'}, {zk.PermAdmin, 'a'}} {
			if a.Perms&p.bit != 0 {
				perms = append(perms, p.c)
			}
		}
		parts[i] = a.Scheme + ":" + a.ID + ":" + string(perms)
	}
	return strings.Join(parts, ",")
}
