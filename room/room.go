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
// created it; "" for a room created before rooms recorded one.
type Room struct {
	Name    string
	Owner   string
	Members []string
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
type Registry struct {
	mu     sync.RWMutex
	rooms  map[string]map[string]struct{} // room -> members; guarded by mu
	byUser map[string]map[string]struct{} // user -> rooms; guarded by mu
	owners map[string]string              // room -> owner, for rooms that have one; guarded by mu
	online map[string]where               // user -> session; guarded by mu
}

// New returns an empty Registry.
func New() *Registry {
	return &Registry{
		rooms:  map[string]map[string]struct{}{},
		byUser: map[string]map[string]struct{}{},
		owners: map[string]string{},
		online: map[string]where{},
	}
}

// Load replaces every room with rooms. Where users are online is kept.
func (r *Registry) Load(rooms []Room) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rooms = make(map[string]map[string]struct{}, len(rooms))
	r.byUser = map[string]map[string]struct{}{}
	r.owners = map[string]string{}
	for _, rm := range rooms {
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
	for u := range r.rooms[room] {
		if ur := r.byUser[u]; ur != nil {
			delete(ur, room)
			if len(ur) == 0 {
				delete(r.byUser, u)
			}
		}
	}
	r.rooms[room] = make(map[string]struct{}, len(members))
	for _, u := range members {
		r.addLocked(room, u)
	}
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
// session version ver, unless a later login is already recorded. It
// reports whether the user was offline before (a presence change).
func (r *Registry) Online(user, node, conn string, ver int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, was := r.online[user]
	if was && !w.newer(ver) {
		return false
	}
	r.online[user] = where{node: node, conn: conn, ver: ver}
	return !was
}

// Offline records that user's connection conn ended. A connection that is
// not the user's current one (an older login, replaced since) changes
// nothing. It reports whether the user went offline.
func (r *Registry) Offline(user, conn string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.online[user]
	if !ok || w.conn != conn {
		return false
	}
	delete(r.online, user)
	return true
}

// Roster replaces what is known about node with sessions: the users it
// reports are online there, and users recorded on node but missing from
// sessions are offline. It returns the users who went offline and those
// who came online.
func (r *Registry) Roster(node string, sessions []Session) (offline, online []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := make(map[string]string, len(sessions))
	for _, s := range sessions {
		now[s.User] = s.Conn
	}
	for u, w := range r.online {
		if w.node != node {
			continue
		}
		if _, still := now[u]; !still {
			delete(r.online, u)
			offline = append(offline, u)
		}
	}
	for _, s := range sessions {
		w, was := r.online[s.User]
		if was && w.node != node && !w.newer(s.Ver) {
			continue // a later login elsewhere is already recorded
		}
		if !was {
			online = append(online, s.User)
		}
		r.online[s.User] = where{node: node, conn: s.Conn, ver: s.Ver}
	}
	sort.Strings(offline)
	sort.Strings(online)
	return offline, online
}

// NodeGone marks every user online on node as offline and returns their
// sessions, sorted by user.
func (r *Registry) NodeGone(node string) []Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Session
	for u, w := range r.online {
		if w.node == node {
			out = append(out, Session{User: u, Conn: w.conn})
			delete(r.online, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
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

// Where returns the node user is online on.
func (r *Registry) Where(user string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	w, ok := r.online[user]
	return w.node, ok
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
		if w, ok := r.online[u]; ok {
			out[w.node] = append(out[w.node], u)
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
