package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// loopState is what the loop owner knows and has done in ZooKeeper. Only
// the loop owner touches it (see Cluster.ls).
type loopState struct {
	session     int64 // session the fields below belong to; 0 before the first
	prevSession int64 // the session before an expiry, 0 if none
	connected   bool  // the client has a live session
	authed      bool  // the client holds the credential (kept across sessions: the client resends it)
	secured     bool  // secure has run (kept across sessions: once per Cluster)

	registered  bool      // <root>/nodes/<id> exists and belongs to session
	dupSince    time.Time // when <root>/nodes/<id> was first seen held by another session
	dupLogged   time.Time // last ERROR about it, to keep the log readable
	selfWatched bool      // an exists watch is set on <root>/nodes/<id>

	election          string // own election znode name, "" when not in the election
	electionUncertain bool   // a create of it failed in a way that may have created it

	membersStale  bool // <root>/nodes must be read (and its watch set) again
	electionStale bool // <root>/election must be read again
	watchedPred   string

	members    []Member // never modified once assigned: published snapshots share it
	membersSet bool     // members has been read at least once
	leader     Leader
	leaderName string // election znode name of leader

	published State // last published snapshot
	leaving   bool  // Close or a failed Start is winding down
}

// ready reports whether Start may return.
func (ls *loopState) ready() bool {
	return ls.connected && ls.registered && ls.election != "" && !ls.membersStale && !ls.electionStale
}

// run is the loop: it reacts to every ZooKeeper event, retries failed
// operations with backoff and stops when Close is called. It owns c.ls.
func (c *Cluster) run() {
	defer close(c.loopDone)
	var b backoff
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var retry <-chan time.Time
		if err := c.step(false); err != nil {
			d := b.next()
			ev := c.log.Warn()
			switch {
			case errors.Is(err, ErrAccess):
				ev = c.log.Error()
			case isConnErr(err) || errors.Is(err, errWaiting) || errors.Is(err, errLostSelf):
				ev = c.log.Debug()
			}
			ev.Err(err).Dur("retry_in", d).Msg("retrying")
			timer.Reset(d)
			retry = timer.C
		} else {
			b.reset()
		}
		select {
		case <-c.stop:
			return
		case <-c.kick:
			timer.Stop()
		case <-retry:
		}
	}
}

var (
	// errWaiting means the node waits for its znode name to be freed.
	errWaiting = errors.New("cluster: waiting for the node znode to be freed")
	// errLostSelf means the own node znode was deleted while the session
	// lives; the next step registers again.
	errLostSelf = errors.New("cluster: own node znode is gone: registering again")
)

// step brings ZooKeeper and the published State in line with the client's
// current session, then publishes. It returns nil when there is nothing to
// do until the next event, or an error when it must run again after a
// backoff; one wrapping ErrAccess when ZooKeeper refused a change for want
// of permission. startup is true while Start owns the loop.
func (c *Cluster) step(startup bool) error {
	return c.denied(c.sync(startup))
}

// sync is step without the translation of NoAuth errors.
func (c *Cluster) sync(startup bool) error {
	ls := &c.ls
	f := c.pending.Swap(0)
	if f&flagMembers != 0 {
		ls.membersStale = true
	}
	if f&flagElection != 0 {
		ls.electionStale = true
	}
	if f&flagSelf != 0 {
		ls.selfWatched = false
		if ls.registered {
			// Our own node znode changed while registered: check it.
			ls.membersStale = true
		}
	}
	if f&flagResync != 0 {
		ls.membersStale, ls.electionStale = true, true
		ls.watchedPred, ls.selfWatched = "", false
	}

	st, sid := c.conn.State(), c.conn.SessionID()
	if st != zk.StateHasSession || sid == 0 {
		ls.connected = false
		c.publish(c.snapshot())
		return nil // the session events wake us up
	}
	switch {
	case sid != ls.session:
		if ls.session != 0 {
			c.log.Warn().Str("session", hexID(sid)).Str("old_session", hexID(ls.session)).
				Msg("session expired: re-registering")
		}
		*ls = loopState{
			session:       sid,
			prevSession:   ls.session,
			authed:        ls.authed,
			secured:       ls.secured,
			members:       ls.members,
			membersSet:    ls.membersSet,
			leader:        ls.leader,
			leaderName:    ls.leaderName,
			published:     ls.published,
			membersStale:  true,
			electionStale: true,
		}
		c.setOwn("", "")
	case !ls.connected:
		// Same session after a disconnect: the ephemerals are still there;
		// re-read everything and set the watches again.
		ls.membersStale, ls.electionStale = true, true
		ls.watchedPred, ls.selfWatched = "", false
	}
	ls.connected = true

	// Nothing is written before the client holds the credential and the
	// cluster's znodes have their ACL.
	if err := c.authenticate(); err != nil {
		c.publish(c.snapshot())
		return err
	}
	if err := c.secure(); err != nil {
		c.publish(c.snapshot())
		return err
	}
	// A node waiting for its znode name still follows members and leader.
	var regErr error
	if !ls.registered {
		regErr = c.register(startup)
		if startup && errors.Is(regErr, ErrDuplicateID) || isConnErr(regErr) {
			c.publish(c.snapshot())
			return regErr
		}
	}
	if ls.registered && ls.election == "" {
		if err := c.enterElection(); err != nil {
			c.publish(c.snapshot())
			return err
		}
	}
	if ls.membersStale {
		if err := c.readMembers(); err != nil {
			c.publish(c.snapshot())
			return err
		}
	}
	if ls.electionStale {
		if err := c.readElection(); err != nil {
			c.publish(c.snapshot())
			return err
		}
	}
	c.publish(c.snapshot())
	return regErr
}

// register creates <root>/nodes/<id> for the current session.
func (c *Cluster) register(startup bool) error {
	ls := &c.ls
	for range 3 {
		_, err := c.conn.Create(c.selfPath, c.selfData, zk.FlagEphemeral, c.acl)
		switch {
		case err == nil:
			c.registered()
			return nil
		case errors.Is(err, zk.ErrNoNode):
			if err := c.ensureParents(); err != nil {
				return err
			}
			continue
		case !errors.Is(err, zk.ErrNodeExists):
			return fmt.Errorf("cluster: register %s: %w", c.selfPath, err)
		}

		// The znode exists: ours (a create whose reply was lost), our
		// previous session's, or someone else's.
		var ok bool
		var stat *zk.Stat
		if ls.selfWatched {
			ok, stat, err = c.conn.Exists(c.selfPath)
		} else {
			ok, stat, _, err = c.conn.ExistsW(c.selfPath) // wakes us when it goes
			ls.selfWatched = err == nil
		}
		if err != nil {
			return fmt.Errorf("cluster: register %s: %w", c.selfPath, err)
		}
		if !ok {
			continue // just went away: try again
		}
		owner := stat.EphemeralOwner
		if owner == ls.session {
			c.registered()
			return nil
		}
		now := time.Now()
		if ls.dupSince.IsZero() {
			ls.dupSince = now
		}
		switch {
		case owner != 0 && owner == ls.prevSession:
			c.log.Info().Str("session", hexID(ls.session)).Str("owner", hexID(owner)).
				Msg("node znode still held by the expired session; waiting for it to go")
		case startup:
			if now.Sub(ls.dupSince) >= c.cfg.StaleWait {
				return fmt.Errorf("%w: %s is held by session %s (waited %s for it to expire)",
					ErrDuplicateID, c.selfPath, hexID(owner), c.cfg.StaleWait.Round(time.Millisecond))
			}
			if ls.dupLogged.IsZero() {
				ls.dupLogged = now
				c.log.Info().Str("owner", hexID(owner)).Dur("wait", c.cfg.StaleWait).
					Msg("node id held by another session (a previous run?); waiting for it to expire")
			}
		default:
			if ls.dupLogged.IsZero() || now.Sub(ls.dupLogged) >= 10*time.Second {
				ls.dupLogged = now
				c.log.Error().Str("session", hexID(ls.session)).Str("owner", hexID(owner)).
					Msg("node id held by another live session: not a member until it goes; retrying")
			}
		}
		return errWaiting
	}
	return fmt.Errorf("cluster: register %s: znode keeps changing", c.selfPath)
}

func (c *Cluster) registered() {
	ls := &c.ls
	ls.registered = true
	ls.dupSince, ls.dupLogged = time.Time{}, time.Time{}
	ls.membersStale = true
	c.log.Info().Str("session", hexID(ls.session)).Msg("registered")
}

// ensureParents creates the persistent parents of the znodes, the chroot
// and the root included, with the cluster's ACL.
func (c *Cluster) ensureParents() error {
	for _, p := range c.parents {
		if err := c.createPersistent(p); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) createPersistent(p string) error {
	_, err := c.conn.Create(p, nil, 0, c.acl)
	if errors.Is(err, zk.ErrNoAuth) {
		// ZooKeeper checks the parent's ACL before it looks for the
		// znode: one that exists under a parent that admits only others
		// (a chroot an administrator made for the cluster) is fine.
		if ok, _, xerr := c.conn.Exists(p); xerr == nil && ok {
			return nil
		}
	}
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("cluster: create %s: %w", p, err)
	}
	return nil
}

// enterElection creates the own election znode for the current session.
func (c *Cluster) enterElection() error {
	ls := &c.ls
	if ls.electionUncertain {
		// A create failed without an answer: it may have happened.
		name, err := c.findOwnElection()
		if err != nil {
			return err
		}
		ls.electionUncertain = false
		if name != "" {
			c.entered(name)
			return nil
		}
	}
	p, err := c.conn.Create(c.electionPath+"/n_", c.selfData, zk.FlagEphemeral|zk.FlagSequence, c.acl)
	if errors.Is(err, zk.ErrNoNode) {
		if err := c.ensureParents(); err != nil {
			return err
		}
		p, err = c.conn.Create(c.electionPath+"/n_", c.selfData, zk.FlagEphemeral|zk.FlagSequence, c.acl)
	}
	if err != nil {
		ls.electionUncertain = true
		return fmt.Errorf("cluster: enter election: %w", err)
	}
	c.entered(p[strings.LastIndexByte(p, '/')+1:])
	return nil
}

func (c *Cluster) entered(name string) {
	c.ls.election = name
	c.ls.electionStale = true
	c.setOwn(name, c.ls.watchedPred)
	c.log.Debug().Str("znode", name).Msg("entered the election")
}

// findOwnElection returns the election znode the current session owns, or
// "".
func (c *Cluster) findOwnElection() (string, error) {
	names, _, err := c.conn.Children(c.electionPath)
	if err != nil {
		return "", fmt.Errorf("cluster: list election: %w", err)
	}
	for _, n := range names {
		ok, stat, err := c.conn.Exists(c.electionPath + "/" + n)
		if err != nil {
			return "", fmt.Errorf("cluster: list election: %w", err)
		}
		if ok && stat.EphemeralOwner == c.ls.session {
			return n, nil
		}
	}
	return "", nil
}

// readMembers reads <root>/nodes, sets the children watch again and logs
// joins and leaves.
func (c *Cluster) readMembers() error {
	ls := &c.ls
	names, _, _, err := c.conn.ChildrenW(c.nodesPath)
	if errors.Is(err, zk.ErrNoNode) {
		if err := c.ensureParents(); err != nil {
			return err
		}
		names, _, _, err = c.conn.ChildrenW(c.nodesPath)
	}
	if err != nil {
		return fmt.Errorf("cluster: read members: %w", err)
	}
	members := make([]Member, 0, len(names))
	selfOK := false
	for _, n := range names {
		data, stat, err := c.conn.Get(c.nodesPath + "/" + n)
		if errors.Is(err, zk.ErrNoNode) {
			continue // left meanwhile; the children watch fires again
		}
		if err != nil {
			return fmt.Errorf("cluster: read member %s: %w", n, err)
		}
		var m Member
		if err := json.Unmarshal(data, &m); err != nil {
			c.log.Warn().Err(err).Str("member", n).Msg("malformed member znode")
		}
		m.ID = n
		if n == c.cfg.Self.ID && stat.EphemeralOwner == ls.session {
			selfOK = true
		}
		members = append(members, m)
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })

	c.logMembers(ls.members, members, ls.membersSet)
	ls.members, ls.membersSet = members, true
	ls.membersStale = false
	if ls.registered && !selfOK {
		// Deleted under us while the session lives: register again.
		ls.registered = false
		return errLostSelf
	}
	return nil
}

func (c *Cluster) logMembers(old, cur []Member, known bool) {
	if !known {
		ids := make([]string, len(cur))
		for i, m := range cur {
			ids[i] = m.ID
		}
		c.log.Info().Strs("members", ids).Msg("cluster members")
		return
	}
	for _, m := range cur {
		i := slices.IndexFunc(old, func(o Member) bool { return o.ID == m.ID })
		switch {
		case i < 0:
			c.log.Info().Str("member", m.ID).Str("ws", m.WS).Str("peer", m.Peer).Msg("member joined")
		case old[i] != m:
			c.log.Info().Str("member", m.ID).Str("ws", m.WS).Str("peer", m.Peer).Msg("member updated")
		}
	}
	for _, o := range old {
		if !slices.ContainsFunc(cur, func(m Member) bool { return m.ID == o.ID }) {
			c.log.Info().Str("member", o.ID).Msg("member left")
		}
	}
}

// readElection reads <root>/election, finds the leader and sets the watch
// on the own predecessor.
func (c *Cluster) readElection() error {
	ls := &c.ls
	for range 5 {
		names, _, err := c.conn.Children(c.electionPath)
		if err != nil {
			return fmt.Errorf("cluster: read election: %w", err)
		}
		cands := sortElection(names)
		me := -1
		if ls.election != "" {
			me = slices.Index(cands, ls.election)
			if me < 0 {
				// Deleted under us while the session lives: enter again.
				c.log.Warn().Str("znode", ls.election).Msg("own election znode is gone: entering again")
				ls.election = ""
				if err := c.enterElection(); err != nil {
					return err
				}
				continue
			}
		}
		if len(cands) == 0 {
			ls.leader, ls.leaderName = Leader{}, ""
			ls.watchedPred = ""
			ls.electionStale = false
			c.setOwn(ls.election, "")
			return nil
		}
		leader, leaderName := ls.leader, ls.leaderName
		if cands[0] != leaderName {
			l, err := c.readLeader(c.conn, cands[0])
			if errors.Is(err, zk.ErrNoNode) {
				continue // gone meanwhile: list again
			}
			if err != nil {
				return fmt.Errorf("cluster: read leader: %w", err)
			}
			leader, leaderName = l, cands[0]
		}
		pred := ""
		if me > 0 {
			pred = cands[me-1]
		}
		if pred != "" && pred != ls.watchedPred {
			ok, _, _, err := c.conn.ExistsW(c.electionPath + "/" + pred)
			if err != nil {
				return fmt.Errorf("cluster: watch predecessor: %w", err)
			}
			if !ok {
				continue // gone meanwhile: list again
			}
		}
		ls.watchedPred = pred
		ls.leader, ls.leaderName = leader, leaderName
		ls.electionStale = false
		c.setOwn(ls.election, pred)
		return nil
	}
	return errors.New("cluster: read election: it keeps changing")
}

// sortElection returns the election znode names (n_<sequence>) in
// sequence order, dropping anything else.
func sortElection(names []string) []string {
	type cand struct {
		name string
		seq  int64
	}
	cs := make([]cand, 0, len(names))
	for _, n := range names {
		i := strings.LastIndex(n, "n_")
		if i < 0 {
			continue
		}
		seq, err := strconv.ParseInt(n[i+2:], 10, 64)
		if err != nil {
			continue
		}
		cs = append(cs, cand{n, seq})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.seq != b.seq {
			if a.seq < b.seq {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

// snapshot builds the State the loop state describes.
func (c *Cluster) snapshot() State {
	ls := &c.ls
	return State{
		Connected: ls.connected,
		Members:   ls.members,
		Leader:    ls.leader,
		IsLeader:  ls.connected && ls.election != "" && ls.leaderName == ls.election,
		Session:   ls.session,
	}
}

// publish makes s the current State and offers it on Updates if it differs
// from the last one. Called by the loop owner only, so sends never race: if
// the reader has not taken the previous snapshot, it is replaced.
func (c *Cluster) publish(s State) {
	ls := &c.ls
	if sameState(ls.published, s) {
		return
	}
	s.Since = time.Now()
	c.logTransition(ls.published, s)
	ls.published = s
	c.mu.Lock()
	c.cur = s
	c.mu.Unlock()
	offer(c.updates, s)
}

// offer puts s in ch (cap 1), replacing a value the reader has not taken.
// Only one goroutine may send on ch.
func offer(ch chan State, s State) {
	select {
	case ch <- s:
		return
	default:
	}
	select {
	case <-ch:
	default:
	}
	ch <- s // cannot block: the only sender just made room
}

func sameState(a, b State) bool {
	return a.Connected == b.Connected && a.Leader == b.Leader && a.IsLeader == b.IsLeader &&
		a.Session == b.Session && slices.Equal(a.Members, b.Members)
}

// logTransition logs what an operator wants to know about a new State.
func (c *Cluster) logTransition(old, cur State) {
	if c.ls.leaving {
		if old.IsLeader {
			c.log.Info().Int64("epoch", old.Leader.Epoch).Msg("stepping down: leaving the cluster")
		}
		return
	}
	if old.Connected && !cur.Connected {
		ev := c.log.Warn().Str("session", hexID(old.Session))
		if old.IsLeader {
			ev = ev.Int64("epoch", old.Leader.Epoch)
		}
		ev.Msg("disconnected from ZooKeeper: leader duties paused")
	}
	if !old.Connected && cur.Connected && old.Session == cur.Session {
		c.log.Info().Str("session", hexID(cur.Session)).Msg("reconnected to ZooKeeper: session kept")
	}
	switch {
	case cur.IsLeader && !old.IsLeader && old.Leader == cur.Leader && old.Session == cur.Session:
		c.log.Info().Int64("epoch", cur.Leader.Epoch).Str("session", hexID(cur.Session)).Msg("leader duties resumed")
	case cur.IsLeader && !old.IsLeader:
		c.log.Info().Int64("epoch", cur.Leader.Epoch).Str("session", hexID(cur.Session)).Msg("became leader")
	case !cur.IsLeader && old.IsLeader && cur.Connected:
		c.log.Warn().Int64("epoch", old.Leader.Epoch).Msg("no longer leader")
	}
	if cur.Connected && !cur.IsLeader && cur.Leader != old.Leader {
		if cur.Leader.ID == "" {
			c.log.Info().Msg("no leader")
		} else {
			c.log.Info().Str("leader", cur.Leader.ID).Int64("epoch", cur.Leader.Epoch).Msg("leader is " + cur.Leader.ID)
		}
	}
}

// setOwn records the own election znode and the watched one for State
// readers (and tests).
func (c *Cluster) setOwn(own, watching string) {
	c.mu.Lock()
	c.own, c.watching = own, watching
	c.mu.Unlock()
}

func hexID(id int64) string { return "0x" + strconv.FormatInt(id, 16) }

// isConnErr reports whether err means the request did not get an answer
// from a live session (the client reconnects by itself).
func isConnErr(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrClosing) ||
		errors.Is(err, zk.ErrSessionMoved)
}

// backoff yields growing, jittered retry delays.
type backoff struct{ n int }

const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
)

func (b *backoff) next() time.Duration {
	d := backoffMin << min(b.n, 10)
	if d > backoffMax {
		d = backoffMax
	} else {
		b.n++
	}
	// ±20% jitter so that nodes do not retry in step.
	return d - d/5 + rand.N(d/5*2+1)
}

func (b *backoff) reset() { b.n = 0 }
