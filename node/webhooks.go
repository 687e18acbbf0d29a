package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"chatcluster/handler"
	"chatcluster/internal/keyspace"
	"chatcluster/metrics"
	"chatcluster/protocol"
	"chatcluster/webhook"
)

// The node's part of the webhooks (package webhook): every node emits its
// logins and logouts and has its history writer forward what it wrote to
// the queue (both only add to a queue that exists, so a cluster without
// endpoints stores nothing); a node with endpoints also runs a dispatcher
// (one of them delivers at a time); a node with a before-message hook
// asks it about each of its clients' messages.

// setupWebhooks makes the emitter, the dispatcher and the hook that the
// configuration asks for, and prepares the queue of the dispatcher's
// endpoints. Start calls it before it makes the handler; it starts no
// goroutine.
func (s *Server) setupWebhooks(ctx context.Context) error {
	wc := s.cfg.Webhooks
	var err error
	s.events, err = webhook.NewEmitter(webhook.EmitterConfig{
		Redis: s.rdb, Prefix: s.cfg.RedisPrefix, QueueCap: wc.QueueCap, Logger: s.log,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if wc.Enabled() {
		s.hooks, err = webhook.NewDispatcher(webhook.DispatcherConfig{
			Config: wc, Redis: s.rdb, Prefix: s.cfg.RedisPrefix, Consumer: s.cfg.ID, Logger: s.log,
		})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if err := s.hooks.Prepare(ctx); err != nil {
			return fmt.Errorf("node: preparing the webhook queue: %w", err)
		}
	}
	if wc.BeforeMessage.URL != "" {
		s.screen, err = webhook.NewHook(wc.BeforeMessage, s.log, func(d time.Duration) { s.wm.HookSeconds.Observe(d.Seconds()) })
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}

// forwardCap is how long each shard's queue stream may grow, for the
// history writer's forwarding.
func (s *Server) forwardCap() int64 { return s.cfg.Webhooks.QueueCap / keyspace.Shards }

// screenDep is the handler's before-message hook: nil without one (a nil
// *webhook.Hook in the interface would not be nil).
func (s *Server) screenDep() handler.Screen {
	if s.screen == nil {
		return nil
	}
	return screenSvc{s.screen}
}

// runWebhooks starts the loops of the emitter and the dispatcher. Start
// calls it.
func (s *Server) runWebhooks() {
	s.goAttach(func() {
		if err := s.events.Run(s.ctx); err != nil {
			s.log.Error().Err(err).Msg("webhook events stopped")
		}
	})
	if s.hooks != nil {
		s.goAttach(func() {
			if err := s.hooks.Run(s.ctx); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error().Err(err).Msg("webhook dispatcher stopped")
			}
		})
	}
}

// flushWebhooks sends the logouts of the connections closed last, after
// the emitter's loop ended. Close calls it before it closes Redis.
func (s *Server) flushWebhooks() {
	if s.events == nil || s.rdb == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.events.Flush(ctx)
}

// emitSession queues a user.login or user.logout event of c. It never
// blocks. Every connection whose login was announced has its logout
// announced when it ends, also one replaced by a newer login of its user.
func (s *Server) emitSession(typ string, c *client, user string, ts int64) {
	if s.events == nil {
		return
	}
	if typ == webhook.UserLogin {
		c.announced.Store(true)
	}
	s.events.Emit(typ, user, ts, webhook.SessionData{User: user, Node: s.cfg.ID, SessionID: c.id, Visitor: protocol.IsVisitor(user), Device: c.device})
}

// screenSvc adapts the before-message hook to handler.Screen.
type screenSvc struct{ h *webhook.Hook }

func (sv screenSvc) FailClosed() bool { return sv.h.FailClosed() }

func (sv screenSvc) Screen(ctx context.Context, m protocol.Message) (handler.Verdict, error) {
	d, err := sv.h.Check(ctx, m)
	return handler.Verdict{Action: d.Action, Reason: d.Reason, Text: d.Text}, err
}

// webhookSources are the sources of the webhook metrics; what Start has
// not made yet (or the configuration does not ask for) reads as nothing.
func (s *Server) webhookSources() metrics.WebhookSources {
	src := metrics.WebhookSources{
		Events: func() webhook.EmitterStats {
			if s.events == nil {
				return webhook.EmitterStats{}
			}
			return s.events.Stats()
		},
	}
	if s.cfg.Webhooks.Enabled() {
		src.Endpoints = func() []webhook.EndpointStats {
			if s.hooks == nil {
				return nil
			}
			return s.hooks.Stats()
		}
		src.Active = func() bool { return s.hooks != nil && s.hooks.Active() }
		src.Backlog = func(ctx context.Context) (map[string]int64, error) {
			if s.hooks == nil {
				return nil, errors.New("node: not started")
			}
			return s.hooks.Backlog(ctx)
		}
	}
	if s.cfg.Webhooks.BeforeMessage.URL != "" {
		src.Hook = func() webhook.HookStats {
			if s.screen == nil {
				return webhook.HookStats{}
			}
			return s.screen.Stats()
		}
	}
	return src
}
