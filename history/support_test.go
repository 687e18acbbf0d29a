package history_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"chatcluster/history"
	"chatcluster/protocol"
	"chatcluster/support"
)

// Support conversations are fenced like rooms: a leader's claim shuts the
// one before out of every open conversation. A visitor's are read newest
// first; only the open ones are loaded.
func TestSupportConvsSaveLoadAndFence(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1 := support.OpenNew("~vera", "Vera", "web", 0, 1000)
	if err := s.SaveSupportConv(ctx, c1, 5); err != nil {
		t.Fatal(err)
	}
	c1.State, c1.Agent, c1.Agents, c1.Assigned = protocol.SupportAssigned, "ann", []string{"ann"}, 1100
	if err := s.SaveSupportConv(ctx, c1, 5); err != nil {
		t.Fatal(err)
	}
	closed := c1
	closed.State, closed.Closed, closed.ClosedBy, closed.Agent = protocol.SupportClosed, 1200, "ann", ""
	if err := s.SaveSupportConv(ctx, closed, 6); err != nil {
		t.Fatal(err)
	}
	c2 := support.OpenNew("~vera", "Vera", "web", 1, 1300)
	other := support.OpenNew("~otto", "", "app", 0, 1350)
	for _, c := range []support.Conv{c2, other} {
		if err := s.SaveSupportConv(ctx, c, 6); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveSupportConv(ctx, c1, 5); !errors.Is(err, history.ErrFenced) {
		t.Fatalf("an older epoch rewriting the closed conversation: %v, want ErrFenced", err)
	}
	if err := s.ClaimSupport(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSupportConv(ctx, c2, 8); !errors.Is(err, history.ErrFenced) {
		t.Fatalf("the previous leader after a claim: %v, want ErrFenced", err)
	}
	open, err := s.OpenSupportConvs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range open {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	if want := []string{"cs:~otto:1", "cs:~vera:2"}; !slices.Equal(ids, want) {
		t.Fatalf("open conversations = %v, want %v", ids, want)
	}
	vera, err := s.VisitorConvs(ctx, "~vera", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(vera) != 2 || vera[0].ID != "cs:~vera:2" || vera[1].ID != "cs:~vera:1" || vera[1].ClosedBy != "ann" || !slices.Equal(vera[1].Agents, []string{"ann"}) {
		t.Fatalf("Vera's conversations = %+v", vera)
	}
	if n, err := s.LastSupportConv(ctx, "~vera"); err != nil || n != 2 {
		t.Fatalf("LastSupportConv = %d, %v; want 2", n, err)
	}
	if n, err := s.LastSupportConv(ctx, "~nobody"); err != nil || n != 0 {
		t.Fatalf("LastSupportConv of a new visitor = %d, %v", n, err)
	}
}

// Agents: only registered users; adding again leaves one as it is; the
// status and the operator's fields are written separately.
func TestAgents(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := s.AddAgent(ctx, "ann", 2); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("an agent who is no user: %v, want ErrNotFound", err)
	}
	if err := s.CreateUser(ctx, "ann", []byte("hash")); err != nil {
		t.Fatal(err)
	}
	if created, has, err := s.AddAgent(ctx, "ann", 2); err != nil || !created || has != 2 {
		t.Fatalf("AddAgent = %v %d %v", created, has, err)
	}
	if created, has, err := s.AddAgent(ctx, "ann", 5); err != nil || created || has != 2 {
		t.Fatalf("AddAgent again = %v %d %v; want it left at 2", created, has, err)
	}
	if err := s.SaveAgentStatus(ctx, "ann", protocol.AgentAvailable); err != nil {
		t.Fatal(err)
	}
	four, off := 4, true
	if err := s.UpdateAgent(ctx, "ann", &four, &off); err != nil {
		t.Fatal(err)
	}
	agents, err := s.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []support.Agent{{Name: "ann", Capacity: 4, Disabled: true, Status: protocol.AgentAvailable}}
	if !slices.Equal(agents, want) {
		t.Fatalf("Agents = %+v, want %+v", agents, want)
	}
	if err := s.UpdateAgent(ctx, "bob", &four, nil); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("UpdateAgent of no agent: %v", err)
	}
	if err := s.RemoveAgent(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAgent(ctx, "ann"); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("RemoveAgent twice: %v", err)
	}
}
