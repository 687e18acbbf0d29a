package leader

import (
	"context"
	"slices"

	"chatcluster/protocol"
	"chatcluster/room"
)

// The room operations of the server API (protocol.RoomCreate and the
// others), which a node asks for on behalf of the gateway. Like every room
// request they run on the worker of their room.

// runServer executes one server API room request. Worker of the
// request's room only.
func (rs *roomService) runServer(ctx context.Context, f protocol.PeerFrame) protocol.PeerFrame {
	switch f.Op {
	case protocol.RoomCreate:
		return rs.create(ctx, f.Room, f.Members)
	case protocol.RoomDelete:
		return rs.remove(ctx, f)
	case protocol.RoomMembers:
		return rs.members(f.Room)
	case protocol.RoomEnter:
		if !rs.reg.Exists(f.Room) {
			return rs.unknown(f.Room)
		}
		if _, member := rs.reg.IsMember(f.Room, f.User); member {
			return protocol.PeerFrame{}
		}
		out := rs.join(ctx, f.User, f.Room)
		out.Members = nil // the poster needs none of them
		return out
	case protocol.RoomOnline:
		return rs.onlinePage(f.Server)
	}
	return fail(protocol.CodeBadRequest, "unknown room operation %q", f.Op)
}

// unknown is the answer about a room that does not exist: 404, saying
// whether it was deleted.
func (rs *roomService) unknown(name string) protocol.PeerFrame {
	if rs.reg.Deleted(name) {
		return fail(protocol.CodeNotFound, "room %q was deleted", name)
	}
	return fail(protocol.CodeNotFound, "unknown room %q", name)
}

// create makes a new room with members (existing users, checked by the
// asking node). A name in use, or once used by a deleted room, is 409.
func (rs *roomService) create(ctx context.Context, name string, members []string) protocol.PeerFrame {
	l := rs.l
	switch {
	case rs.reg.Deleted(name):
		return fail(protocol.CodeConflict, "room %q was deleted; its name cannot be used again", name)
	case rs.reg.Exists(name):
		return fail(protocol.CodeConflict, "room %q exists already", name)
	}
	members = slices.Compact(slices.Sorted(slices.Values(members)))
	if len(members) > protocol.MaxRoomMembers {
		return fail(protocol.CodeBadRequest, "a room holds at most %d members", protocol.MaxRoomMembers)
	}
	// A room the server API creates has no owner: no user's join made it.
	if err := l.d.Store.SaveRoom(ctx, room.Room{Name: name, Members: members}, l.epoch); err != nil {
		return rs.storeErr(name, err)
	}
	rs.reg.Set(name, "", members)
	l.log.Info().Str("room", name).Int("members", len(members)).Msg("room created")
	if err := l.d.Convs.AddMembers(ctx, []room.Room{{Name: name, Members: members}}); err != nil {
		// The room exists; a member who cannot read it yet can by
		// joining it (a join adds the room to the member's list again).
		l.log.Warn().Err(err).Str("room", name).Msg("room created, but not yet added to its members' conversation lists")
	}
	// Each member joined, as by joinRoom: the room's conversation starts
	// with their join events.
	for _, u := range members {
		rs.announce(ctx, name, u, true, nil)
	}
	return protocol.PeerFrame{Members: members}
}

// remove deletes a room for good: it is stored deleted (its name stays
// taken), its members lose it from their conversation lists, so they can
// no longer read or sync it, and those online get a roomDeleted push. Its
// messages stay stored. It answers with the members the room had.
func (rs *roomService) remove(ctx context.Context, f protocol.PeerFrame) protocol.PeerFrame {
	l := rs.l
	members, ok := rs.reg.Members(f.Room)
	if !ok {
		return rs.unknown(f.Room)
	}
	plan := rs.reg.Plan(f.Room)
	if err := l.d.Store.DeleteRoom(ctx, f.Room, l.epoch); err != nil {
		return rs.storeErr(f.Room, err)
	}
	rs.reg.Delete(f.Room)
	reason := ""
	if f.Server != nil {
		reason = f.Server.Reason
	}
	l.log.Info().Str("room", f.Room).Int("members", len(members)).Str("reason", reason).Msg("room deleted")
	if push, err := protocol.EncodePush(protocol.PushRoomDeleted, protocol.RoomDeletedPush{Room: f.Room, Reason: reason}); err == nil {
		for node, users := range plan {
			if node == l.id {
				l.node.DeliverRaw(slices.Values(users), push)
				continue
			}
			l.send(node, &protocol.PeerFrame{Type: protocol.PeerPush, Recipients: protocol.JoinNames(users), Push: push})
		}
	}
	if err := l.d.Convs.RemoveMembers(ctx, room.Room{Name: f.Room, Members: members}); err != nil {
		l.log.Warn().Err(err).Str("room", f.Room).Int("members", len(members)).
			Msg("room deleted, but its members' conversation lists still name it: they can still read its history")
	}
	return protocol.PeerFrame{Members: members}
}

// members answers a room's members (Members) and those of them online
// (Users).
func (rs *roomService) members(name string) protocol.PeerFrame {
	members, ok := rs.reg.Members(name)
	if !ok {
		return rs.unknown(name)
	}
	var online []string
	for _, u := range members {
		if _, on := rs.reg.Where(u); on {
			online = append(online, u)
		}
	}
	return protocol.PeerFrame{Members: members, Users: online}
}

// onlinePage answers a page of the users online, as the nodes' logins
// and rosters tell the leader.
func (rs *roomService) onlinePage(q *protocol.ServerPeer) protocol.PeerFrame {
	after, limit := "", protocol.DefaultOnlinePage
	if q != nil {
		after = q.After
		if q.Limit > 0 {
			limit = min(q.Limit, protocol.MaxOnlinePage)
		}
	}
	page, more := rs.reg.OnlinePage(after, limit)
	return protocol.PeerFrame{Server: &protocol.ServerPeer{Present: page, More: more}}
}
