package cluster

import (
	"errors"
	"time"

	"github.com/go-zookeeper/zk"
)

// zkConn is the ZooKeeper client with every request this package makes
// timed through Config.Observe. The methods it does not override (State,
// SessionID, Close) are the client's own.
type zkConn struct {
	*zk.Conn
	observe func(op string, took time.Duration, err error) // nil: not timed
}

// done reports one request that began at start.
func (z *zkConn) done(op string, start time.Time, err error) {
	if z.observe == nil {
		return
	}
	if errors.Is(err, zk.ErrNoNode) || errors.Is(err, zk.ErrNodeExists) || errors.Is(err, zk.ErrBadVersion) ||
		errors.Is(err, zk.ErrNoAuth) {
		err = nil // an answer, not a failure
	}
	z.observe(op, time.Since(start), err)
}

func (z *zkConn) Create(path string, data []byte, flags int32, acl []zk.ACL) (string, error) {
	start := time.Now()
	p, err := z.Conn.Create(path, data, flags, acl)
	z.done("create", start, err)
	return p, err
}

func (z *zkConn) Delete(path string, version int32) error {
	start := time.Now()
	err := z.Conn.Delete(path, version)
	z.done("delete", start, err)
	return err
}

func (z *zkConn) Exists(path string) (bool, *zk.Stat, error) {
	start := time.Now()
	ok, st, err := z.Conn.Exists(path)
	z.done("exists", start, err)
	return ok, st, err
}

func (z *zkConn) ExistsW(path string) (bool, *zk.Stat, <-chan zk.Event, error) {
	start := time.Now()
	ok, st, ch, err := z.Conn.ExistsW(path)
	z.done("exists", start, err)
	return ok, st, ch, err
}

func (z *zkConn) Get(path string) ([]byte, *zk.Stat, error) {
	start := time.Now()
	b, st, err := z.Conn.Get(path)
	z.done("get", start, err)
	return b, st, err
}

func (z *zkConn) Children(path string) ([]string, *zk.Stat, error) {
	start := time.Now()
	names, st, err := z.Conn.Children(path)
	z.done("children", start, err)
	return names, st, err
}

func (z *zkConn) ChildrenW(path string) ([]string, *zk.Stat, <-chan zk.Event, error) {
	start := time.Now()
	names, st, ch, err := z.Conn.ChildrenW(path)
	z.done("children", start, err)
	return names, st, ch, err
}

func (z *zkConn) Sync(path string) (string, error) {
	start := time.Now()
	p, err := z.Conn.Sync(path)
	z.done("sync", start, err)
	return p, err
}

func (z *zkConn) Multi(ops ...any) ([]zk.MultiResponse, error) {
	start := time.Now()
	res, err := z.Conn.Multi(ops...)
	z.done("multi", start, err)
	return res, err
}

func (z *zkConn) AddAuth(scheme string, auth []byte) error {
	start := time.Now()
	err := z.Conn.AddAuth(scheme, auth)
	z.done("auth", start, err)
	return err
}

func (z *zkConn) GetACL(path string) ([]zk.ACL, *zk.Stat, error) {
	start := time.Now()
	acl, st, err := z.Conn.GetACL(path)
	z.done("getacl", start, err)
	return acl, st, err
}

func (z *zkConn) SetACL(path string, acl []zk.ACL, version int32) (*zk.Stat, error) {
	start := time.Now()
	st, err := z.Conn.SetACL(path, acl, version)
	z.done("setacl", start, err)
	return st, err
}
