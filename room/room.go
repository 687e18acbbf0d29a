// Package room is the leader's view of chat rooms: which rooms exist, who
// is a member of each, and on which node every logged-in user is, so that a
// room message becomes one frame per node carrying that node's recipients.
//
// The state lives in memory on the leader only. Room membership is loaded
// from durable storage when a node becomes leader and every change is
// stored before it is applied here; where users are online is rebuilt from
// the nodes' rosters. A Registry is safe for concurrent use.
package room

import (
	"slices"
	"sort"
	"sync"

	"chatcluster/protocol"
)

// Room is a room and its members, as stored. Owner is the user whose join
// created it; "" for a room created before rooms recorded one. A deleted
// room has no members; its name cannot be used again.
type Room struct {
	Name    string
	Owner   string
	Members []string
	Deleted bool
}

// Session is one logged-in connection of a user on a node. Ver is the
// login's session version: a later login has a higher one.
type Session struct {
	User string `json:"user"`
	Conn string `json:"conn"`
	Ver  int64  `json:"ver,omitempty"`
}

type where struct {
	node, conn string
	ver        int64
}

// newer reports whether a login of version ver replaces w: reports may
// arrive late (queued while there was no leader, or in a roster), and a
// report about an older login must not move the user back to it. A
// version of 0 (unknown) always applies.
func (w where) newer(ver int64) bool { return ver == 0 || w.ver == 0 || ver >= w.ver }

// Registry holds rooms, their members and where users are online.
//
// Under the single login policy (New) a user is online on one connection
// at most: the login with the highest version. Under the multi policy
// (NewMulti) on every connection a node reports, each a device: a user is
// online while any is, and a message reaches every node that holds one.
// Each connection is reported only by its own node, in order, so no
// version is needed to tell a late report from a current one there.
type Registry struct {
	multi  bool
	mu     sync.RWMutex
	rooms  map[string]map[string]struct{} // room -> members; guarded by mu
	byUser map[string]map[string]struct{} // user -> rooms; guarded by mu
	// online holds each user's sessions, oldest first; never empty (a
	// user without one has no entry). nodes holds, for each user in
	// online, the nodes of those sessions, each once, the newest login's
	// last (Nodes). Both are written only by setLocked; slices in them
	// are never changed once stored. Guarded by mu.
	online map[string][]where
	nodes  map[string][]string
	// deleted holds the names of deleted rooms, which are in none of
	// the maps above; guarded by mu.
	deleted map[string]struct{}
	owners  map[string]string // room -> owner, for rooms that have one; guarded by mu
}

// New returns an empty Registry of the single login policy.
func New() *Registry {
	return &Registry{
		rooms:   map[string]map[string]struct{}{},
		byUser:  map[string]map[string]struct{}{},
		online:  map[string][]where{},
		nodes:   map[string][]string{},
		deleted: map[string]struct{}{},
		owners:  map[string]string{},
	}
}

// NewMulti returns an empty Registry of the multi login policy.
func NewMulti() *Registry {
	r := New()
	r.multi = true
	return r
}

// Load replaces every room with rooms. Where users are online is kept.
func (r *Registry) Load(rooms []Room) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rooms = make(map[string]map[string]struct{}, len(rooms))
	r.byUser = map[string]map[string]struct{}{}
	r.deleted = map[string]struct{}{}
	r.owners = map[string]string{}
	for _, rm := range rooms {
		if rm.Deleted {
			r.deleted[rm.Name] = struct{}{}
			continue
		}
		set := make(map[string]struct{}, len(rm.Members))
		r.rooms[rm.Name] = set
		if rm.Owner != "" {
			r.owners[rm.Name] = rm.Owner
		}
		for _, u := range rm.Members {
			r.addLocked(rm.Name, u)
		}
	}
}

func (r *Registry) addLocked(room, user string) {
	set := r.rooms[room]
	if set == nil {
		set = map[string]struct{}{}
		r.rooms[room] = set
	}
	set[user] = struct{}{}
	ur := r.byUser[user]
	if ur == nil {
		ur = map[string]struct{}{}
		r.byUser[user] = ur
	}
	ur[room] = struct{}{}
}

// Exists reports whether room exists.
func (r *Registry) Exists(room string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.rooms[room]
	return ok
}

// IsMember reports whether room exists and whether user is a member.
func (r *Registry) IsMember(room, user string) (exists, member bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	set, ok := r.rooms[room]
	if !ok {
		return false, false
	}
	_, member = set[user]
	return true, member
}

// Members returns room's members, sorted, and whether the room exists.
func (r *Registry) Members(room string) ([]string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	set, ok := r.rooms[room]
	if !ok {
		return nil, false
	}
	return sortedKeys(set), true
}

// WithMember returns the members room would have with user added, sorted.
// It changes nothing: the caller stores the result first, then calls Set.
func (r *Registry) WithMember(room, user string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := sortedKeys(r.rooms[room])
	if i, found := slices.BinarySearch(out, user); !found {
		out = slices.Insert(out, i, user)
	}
	return out
}

// WithoutMember returns the members room would have with user removed.
func (r *Registry) WithoutMember(room, user string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := sortedKeys(r.rooms[room])
	if i, found := slices.BinarySearch(out, user); found {
		out = slices.Delete(out, i, i+1)
	}
	return out
}

// Owner returns the owner of room, "" when it has none (or does not
// exist).
func (r *Registry) Owner(room string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.owners[room]
}

// Set makes members the members of room, creating it if need be with
// owner as its owner; the owner of a room that exists is kept.
func (r *Registry) Set(room, owner string, members []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.rooms[room]; !ok && owner != "" {
		r.owners[room] = owner
	}
	r.dropLocked(room)
	delete(r.deleted, room)
	r.rooms[room] = make(map[string]struct{}, len(members))
	for _, u := range members {
		r.addLocked(room, u)
	}
}

// dropLocked removes room and its members; its owner stays. r.mu held.
func (r *Registry) dropLocked(room string) {
	for u := range r.rooms[room] {
		if ur := r.byUser[u]; ur != nil {
			delete(ur, room)
			if len(ur) == 0 {
				delete(r.byUser, u)
			}
		}
	}
	delete(r.rooms, room)
}

// Delete removes room and its members and records that it was deleted:
// Exists is false for it from now on, and Deleted true. The caller
// stores the deletion first.
func (r *Registry) Delete(room string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropLocked(room)
	delete(r.owners, room)
	r.deleted[room] = struct{}{}
}

// Deleted reports whether room was deleted.
func (r *Registry) Deleted(room string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.deleted[room]
	return ok
}

// List returns every room, sorted by name, saying whether user is a member.
func (r *Registry) List(user string) []protocol.RoomInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]protocol.RoomInfo, 0, len(r.rooms))
	for name, set := range r.rooms {
		_, joined := set[user]
		out = append(out, protocol.RoomInfo{Name: name, Members: len(set), Joined: joined, Owner: r.owners[name]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Len returns how many rooms there are.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.rooms)
}

// Online records that user logged in on node with connection conn, at
// session version ver: under the single policy unless a later login is
// already recorded, replacing the earlier one; under the multi policy as
// one more connection. It reports whether the user was offline before (a
// presence change).
func (r *Registry) Online(user, node, conn string, ver int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.onlineLocked(user, where{node: node, conn: conn, ver: ver})
}

func (r *Registry) onlineLocked(user string, w where) bool {
	ws, was := r.online[user]
	if !r.multi {
		if was && !ws[0].newer(w.ver) {
			return false
		}
		r.setLocked(user, []where{w})
		return !was
	}
	next := make([]where, 0, len(ws)+1)
	for _, o := range ws {
		if o.conn != w.conn {
			next = append(next, o)
		}
	}
	r.setLocked(user, append(next, w))
	return !was
}

// Offline records that user's connection conn ended. A connection that is
// not one of the user's current ones (an older login, replaced since)
// changes nothing. It reports whether the user went offline: it was the
// user's last connection.
func (r *Registry) Offline(user, conn string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws, ok := r.online[user]
	if !ok {
		return false
	}
	next := make([]where, 0, len(ws))
	for _, w := range ws {
		if w.conn != conn {
			next = append(next, w)
		}
	}
	switch {
	case len(next) == len(ws):
		return false
	case len(next) == 0:
		r.setLocked(user, nil)
		return true
	}
	r.setLocked(user, next)
	return false
}

// Roster replaces what is known about node with sessions: the connections
// it reports are online there, and those recorded on node but missing
// from sessions have ended. It returns the users who went offline and
// those who came online.
func (r *Registry) Roster(node string, sessions []Session) (offline, online []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := make(map[string]bool, len(sessions))
	for _, s := range sessions {
		now[s.User] = true
	}
	var left []string // users who had sessions on node only and none reported
	for u, ws := range r.online {
		next := ws[:0:0]
		for _, w := range ws {
			if w.node != node || !r.multi && now[u] {
				next = append(next, w)
			}
		}
		switch {
		case len(next) == len(ws):
		case len(next) == 0:
			r.setLocked(u, nil)
			left = append(left, u)
		default:
			r.setLocked(u, next)
		}
	}
	gone := make(map[string]bool, len(left))
	for _, u := range left {
		gone[u] = true
	}
	for _, s := range sessions {
		_, was := r.online[s.User]
		if !r.multi && was && r.online[s.User][0].node != node && !r.online[s.User][0].newer(s.Ver) {
			continue // a later login elsewhere is already recorded
		}
		if r.onlineLocked(s.User, where{node: node, conn: s.Conn, ver: s.Ver}) {
			if gone[s.User] {
				delete(gone, s.User) // still online: no change
			} else {
				online = append(online, s.User)
			}
		}
	}
	for u := range gone {
		offline = append(offline, u)
	}
	sort.Strings(offline)
	sort.Strings(online)
	return offline, online
}

// NodeGone takes every session on node offline and returns them, sorted
// by user, and the users who went offline with them: those who have no
// session left (under the multi policy, a user online on another node
// too stays online).
func (r *Registry) NodeGone(node string) (gone []Session, offline []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for u, ws := range r.online {
		next := ws[:0:0]
		for _, w := range ws {
			if w.node == node {
				gone = append(gone, Session{User: u, Conn: w.conn})
			} else {
				next = append(next, w)
			}
		}
		switch {
		case len(next) == len(ws):
		case len(next) == 0:
			r.setLocked(u, nil)
			offline = append(offline, u)
		default:
			r.setLocked(u, next)
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		if gone[i].User != gone[j].User {
			return gone[i].User < gone[j].User
		}
		return gone[i].Conn < gone[j].Conn
	})
	sort.Strings(offline)
	return gone, offline
}

// Rooms returns every room with its members.
func (r *Registry) Rooms() []Room {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Room, 0, len(r.rooms))
	for name, set := range r.rooms {
		out = append(out, Room{Name: name, Owner: r.owners[name], Members: sortedKeys(set)})
	}
	return out
}

// OnlinePage returns, sorted by name, at most limit of the users online
// whose names sort after after ("": from the first), each with the node
// of its newest login, and whether more follow.
func (r *Registry) OnlinePage(after string, limit int) (page []protocol.OnlineUser, more bool) {
	r.mu.RLock()
	names := make([]string, 0, len(r.online))
	for u := range r.online {
		if u > after {
			names = append(names, u)
		}
	}
	sort.Strings(names)
	if len(names) > limit {
		names, more = names[:limit], true
	}
	page = make([]protocol.OnlineUser, len(names))
	for i, u := range names {
		ws := r.online[u]
		page[i] = protocol.OnlineUser{Username: u, Node: ws[len(ws)-1].node}
	}
	r.mu.RUnlock()
	return page, more
}

// Where returns the node of user's newest login.
func (r *Registry) Where(user string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ws, ok := r.online[user]
	if !ok {
		return "", false
	}
	return ws[len(ws)-1].node, true
}

// Nodes returns every node user is online on, each once, the node of the
// newest login last; nil when the user is offline. The slice is shared:
// the caller must not change it.
func (r *Registry) Nodes(user string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.nodes[user]
}

// setLocked makes ws user's sessions (none: offline). r.mu held.
func (r *Registry) setLocked(user string, ws []where) {
	if len(ws) == 0 {
		delete(r.online, user)
		delete(r.nodes, user)
		return
	}
	r.online[user] = ws
	var nodes []string
	for i := len(ws) - 1; i >= 0; i-- {
		if !slices.Contains(nodes, ws[i].node) {
			nodes = append(nodes, ws[i].node)
		}
	}
	slices.Reverse(nodes)
	r.nodes[user] = nodes
}

// Plan groups the online members of room by node: the recipients of a
// room message. Offline members get the message by sync.
func (r *Registry) Plan(room string) map[string][]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byNodeLocked(r.rooms[room], "")
}

// Mates groups by node the online users who share a room with user,
// user excluded: who gets user's presence changes.
func (r *Registry) Mates(user string) map[string][]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	mates := map[string]struct{}{}
	for room := range r.byUser[user] {
		for u := range r.rooms[room] {
			mates[u] = struct{}{}
		}
	}
	return r.byNodeLocked(mates, user)
}

func (r *Registry) byNodeLocked(users map[string]struct{}, except string) map[string][]string {
	out := map[string][]string{}
	for u := range users {
		if u == except {
			continue
		}
		for _, node := range r.nodes[u] {
			out[node] = append(out[node], u)
		}
	}
	for _, us := range out {
		sort.Strings(us)
	}
	return out
}

func sortedKeys(set map[string]struct{}) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
