package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/protocol"
	"chatcluster/support"
)

// csDoc is a support conversation as stored. Epoch is the epoch of the
// leader that wrote it last; an older leader can no longer replace it.
type csDoc struct {
	ID       string   `bson:"_id"`
	Visitor  string   `bson:"visitor"`
	N        int64    `bson:"n"`
	Name     string   `bson:"name,omitempty"`
	Channel  string   `bson:"channel,omitempty"`
	State    string   `bson:"state"`
	Agent    string   `bson:"agent,omitempty"`
	Agents   []string `bson:"agents,omitempty"`
	Opened   int64    `bson:"opened"`
	Queued   int64    `bson:"queued,omitempty"`
	Assigned int64    `bson:"assigned,omitempty"`
	Closed   int64    `bson:"closed,omitempty"`
	ClosedBy string   `bson:"closedBy,omitempty"`
	Front    bool     `bson:"front,omitempty"`
	Epoch    int64    `bson:"epoch"`
}

func (d csDoc) conv() support.Conv {
	return support.Conv{ID: d.ID, Visitor: d.Visitor, N: d.N, Name: d.Name, Channel: d.Channel, State: d.State,
		Agent: d.Agent, Agents: d.Agents, Opened: d.Opened, Queued: d.Queued, Assigned: d.Assigned,
		Closed: d.Closed, ClosedBy: d.ClosedBy, Front: d.Front}
}

// agentDoc is an agent: Capacity and Disabled are the operator's, Status
// the agent's own (written by the leader).
type agentDoc struct {
	Name     string    `bson:"_id"`
	Capacity int       `bson:"capacity"`
	Disabled bool      `bson:"disabled,omitempty"`
	Status   string    `bson:"status,omitempty"`
	Created  time.Time `bson:"created"`
}

// SaveSupportConv stores c as written by the leader of epoch, before the
// change takes effect. It returns ErrFenced when a leader with a newer
// epoch has written it.
func (s *Store) SaveSupportConv(ctx context.Context, c support.Conv, epoch int64) error {
	doc := csDoc{ID: c.ID, Visitor: c.Visitor, N: c.N, Name: c.Name, Channel: c.Channel, State: c.State,
		Agent: c.Agent, Agents: c.Agents, Opened: c.Opened, Queued: c.Queued, Assigned: c.Assigned,
		Closed: c.Closed, ClosedBy: c.ClosedBy, Front: c.Front, Epoch: epoch}
	// The visitor's highest number first: VisitorConvs finds its
	// conversations from it.
	if err := s.raiseLastConv(ctx, c.Visitor, c.N); err != nil {
		return fmt.Errorf("history: save support conversation %s: %w", c.ID, err)
	}
	// As SaveRoom: a newer document makes the upsert collide on _id.
	filter := bson.D{{Key: "_id", Value: c.ID}, {Key: "epoch", Value: bson.D{{Key: "$lte", Value: epoch}}}}
	_, err := s.cs.ReplaceOne(ctx, filter, doc, options.Replace().SetUpsert(true))
	switch {
	case mongo.IsDuplicateKeyError(err):
		return ErrFenced
	case err != nil:
		return fmt.Errorf("history: save support conversation %s: %w", c.ID, err)
	}
	return nil
}

// ClaimSupport stamps every open support conversation with epoch, so that
// a leader with an older epoch can no longer write them. A new leader
// calls it before it loads them.
func (s *Store) ClaimSupport(ctx context.Context, epoch int64) error {
	_, err := s.cs.UpdateMany(ctx, bson.D{
		{Key: "state", Value: bson.D{{Key: "$ne", Value: protocol.SupportClosed}}},
		{Key: "epoch", Value: bson.D{{Key: "$lt", Value: epoch}}},
	}, bson.D{{Key: "$set", Value: bson.D{{Key: "epoch", Value: epoch}}}})
	if err != nil {
		return fmt.Errorf("history: claim support conversations: %w", err)
	}
	return nil
}

// OpenSupportConvs returns every support conversation not closed.
func (s *Store) OpenSupportConvs(ctx context.Context) ([]support.Conv, error) {
	return s.findConvs(ctx, bson.D{{Key: "state", Value: bson.D{{Key: "$ne", Value: protocol.SupportClosed}}}}, nil)
}

// VisitorConvs returns the last limit conversations of visitor, newest
// first: by _id, counting down from the visitor's highest number.
func (s *Store) VisitorConvs(ctx context.Context, visitor string, limit int) ([]support.Conv, error) {
	last, err := s.lastConv(ctx, visitor)
	if err != nil {
		return nil, fmt.Errorf("history: support conversations of %s: %w", visitor, err)
	}
	var out []support.Conv
	// A number may lack its conversation (its write failed after the
	// number's): a few more reads than limit cover such holes.
	for n, reads := last, 0; n > 0 && len(out) < limit && reads < limit+maxConvHoles; n, reads = n-1, reads+1 {
		var d csDoc
		err := s.cs.FindOne(ctx, bson.D{{Key: "_id", Value: protocol.SupportConvID(visitor, n)}}).Decode(&d)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			continue
		case err != nil:
			return nil, fmt.Errorf("history: support conversations of %s: %w", visitor, err)
		}
		out = append(out, d.conv())
	}
	return out, nil
}

// maxConvHoles bounds the numbers VisitorConvs reads past limit.
const maxConvHoles = 8

func (s *Store) findConvs(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]support.Conv, error) {
	var cur *mongo.Cursor
	var err error
	if opts != nil {
		cur, err = s.cs.Find(ctx, filter, opts)
	} else {
		cur, err = s.cs.Find(ctx, filter)
	}
	if err != nil {
		return nil, fmt.Errorf("history: support conversations: %w", err)
	}
	var docs []csDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("history: support conversations: %w", err)
	}
	out := make([]support.Conv, len(docs))
	for i, d := range docs {
		out[i] = d.conv()
	}
	return out, nil
}

// LastSupportConv is the highest conversation number visitor has used, 0
// for none.
func (s *Store) LastSupportConv(ctx context.Context, visitor string) (int64, error) {
	n, err := s.lastConv(ctx, visitor)
	if err != nil {
		return 0, fmt.Errorf("history: support conversations of %s: %w", visitor, err)
	}
	return n, nil
}

// Agents returns every agent.
func (s *Store) Agents(ctx context.Context) ([]support.Agent, error) {
	cur, err := s.agents.Find(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("history: agents: %w", err)
	}
	var docs []agentDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("history: agents: %w", err)
	}
	out := make([]support.Agent, len(docs))
	for i, d := range docs {
		st := d.Status
		if st == "" {
			st = protocol.AgentAway
		}
		out[i] = support.Agent{Name: d.Name, Capacity: d.Capacity, Disabled: d.Disabled, Status: st}
	}
	return out, nil
}

// SaveAgentStatus stores the status an agent set itself (the leader
// writes it before it takes effect). ErrNotFound for no such agent.
func (s *Store) SaveAgentStatus(ctx context.Context, name, status string) error {
	r, err := s.agents.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: status}}}})
	switch {
	case err != nil:
		return fmt.Errorf("history: save status of agent %s: %w", name, err)
	case r.MatchedCount == 0:
		return ErrNotFound
	}
	return nil
}

// AddAgent makes registered user name an agent of capacity, enabled and
// away until it sets itself available (the operator's command). An agent
// that exists is left as it is (UpdateAgent changes it): created reports
// whether it was added, capacity what it has. ErrNotFound when there is no
// such user.
func (s *Store) AddAgent(ctx context.Context, name string, capacity int) (created bool, has int, err error) {
	if _, err := s.User(ctx, name); err != nil {
		return false, 0, err
	}
	doc := agentDoc{Name: name, Capacity: capacity, Status: protocol.AgentAway, Created: time.Now().UTC().Truncate(time.Millisecond)}
	_, err = s.agents.InsertOne(ctx, doc)
	if mongo.IsDuplicateKeyError(err) {
		var cur agentDoc
		if err := s.agents.FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&cur); err != nil {
			return false, 0, fmt.Errorf("history: agent %s: %w", name, err)
		}
		return false, cur.Capacity, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("history: add agent %s: %w", name, err)
	}
	return true, capacity, nil
}

// UpdateAgent changes an agent's capacity and whether it is disabled; nil
// leaves a field as it is. ErrNotFound when name is not an agent.
func (s *Store) UpdateAgent(ctx context.Context, name string, capacity *int, disabled *bool) error {
	set := bson.D{}
	if capacity != nil {
		set = append(set, bson.E{Key: "capacity", Value: *capacity})
	}
	if disabled != nil {
		set = append(set, bson.E{Key: "disabled", Value: *disabled})
	}
	if len(set) == 0 {
		return nil
	}
	r, err := s.agents.UpdateOne(ctx, bson.D{{Key: "_id", Value: name}}, bson.D{{Key: "$set", Value: set}})
	switch {
	case err != nil:
		return fmt.Errorf("history: update agent %s: %w", name, err)
	case r.MatchedCount == 0:
		return ErrNotFound
	}
	return nil
}

// RemoveAgent makes name no longer an agent. ErrNotFound if it was not one.
func (s *Store) RemoveAgent(ctx context.Context, name string) error {
	r, err := s.agents.DeleteOne(ctx, bson.D{{Key: "_id", Value: name}})
	switch {
	case err != nil:
		return fmt.Errorf("history: remove agent %s: %w", name, err)
	case r.DeletedCount == 0:
		return ErrNotFound
	}
	return nil
}

// visitorDoc is a customer-service visitor: its id, a hash of its token
// (the token itself is never stored), and what it gave at its creation.
type visitorDoc struct {
	ID      string    `bson:"_id"`
	Token   string    `bson:"token"`
	Name    string    `bson:"name"`
	Channel string    `bson:"channel"`
	Created time.Time `bson:"created"`
}

// CreateVisitor stores a new visitor, whose token hashes to tokenHash.
func (s *Store) CreateVisitor(ctx context.Context, id, tokenHash, name, channel string) error {
	_, err := s.visitors.InsertOne(ctx, visitorDoc{ID: id, Token: tokenHash, Name: name, Channel: channel,
		Created: time.Now().UTC().Truncate(time.Millisecond)})
	if err == nil {
		err = s.putToken(ctx, tokenHash, id)
	}
	if err != nil {
		return fmt.Errorf("history: create visitor %s: %w", id, err)
	}
	return nil
}

// VisitorByToken returns the visitor whose token hashes to tokenHash:
// its id, name and channel. ErrNotFound if none.
func (s *Store) VisitorByToken(ctx context.Context, tokenHash string) (id, name, channel string, err error) {
	var t tokenDoc
	err = s.tokens.FindOne(ctx, bson.D{{Key: "_id", Value: tokenHash}}).Decode(&t)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments) || err == nil && t.Hash == builtID:
		return "", "", "", ErrNotFound
	case err != nil:
		return "", "", "", fmt.Errorf("history: visitor by token: %w", err)
	}
	name, channel, err = s.VisitorByID(ctx, t.Visitor)
	if err != nil {
		return "", "", "", err
	}
	return t.Visitor, name, channel, nil
}

// VisitorByID returns a visitor's name and channel. ErrNotFound if none.
func (s *Store) VisitorByID(ctx context.Context, id string) (name, channel string, err error) {
	var d visitorDoc
	err = s.visitors.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return "", "", ErrNotFound
	case err != nil:
		return "", "", fmt.Errorf("history: visitor %s: %w", id, err)
	}
	return d.Name, d.Channel, nil
}
