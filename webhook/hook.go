package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"chatcluster/protocol"
)

// The actions a before-message hook answers with.
const (
	ActionAllow   = "allow"
	ActionReject  = "reject"
	ActionRewrite = "rewrite"
)

// MaxReason bounds the reason of a rejection that the sender is told, in
// bytes; a longer one is cut.
const MaxReason = 200

// hookAnswerMax bounds the hook's answer, in bytes.
const hookAnswerMax = 64 << 10

// Decision is a before-message hook's answer.
type Decision struct {
	Action string `json:"action"`           // ActionAllow, ActionReject or ActionRewrite
	Reason string `json:"reason,omitempty"` // reject: what the sender is told
	Text   string `json:"text,omitempty"`   // rewrite: the text stored instead
}

// HookStats counts a Hook's calls by outcome.
type HookStats struct {
	Allowed, Rejected, Rewritten int64
	Failed                       int64 // no usable answer in time: error, timeout, bad answer
}

// Hook calls the before-message hook: synchronously, once per message,
// within its timeout, signed like a delivery. It is safe for concurrent
// use. A failing hook is logged when it starts failing and when it
// answers again, not once per message.
type Hook struct {
	cfg     HookConfig
	url     string // redacted, for logs
	client  *http.Client
	log     zerolog.Logger
	observe func(time.Duration)

	mu       sync.Mutex // guards the failure state below
	failing  bool
	since    time.Time
	failures int

	allowed, rejected, rewritten, failed atomic.Int64
}

// NewHook returns the hook of cfg (whose URL must be set; Config.Validate
// has checked it). observe, if not nil, is told how long each call took.
func NewHook(cfg HookConfig, log zerolog.Logger, observe func(time.Duration)) (*Hook, error) {
	if err := checkURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("webhook: before-message hook: %w", err)
	}
	if len(cfg.Secret) < MinSecret {
		return nil, fmt.Errorf("webhook: before-message hook: the secret must be at least %d bytes", MinSecret)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultHookTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64 // one call per message: many at once under load
	return &Hook{
		cfg: cfg, url: redact(cfg.URL),
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		log:     log.With().Str("component", "before-message-hook").Logger(),
		observe: observe,
	}, nil
}

// FailClosed says whether a message is refused when the hook fails.
func (h *Hook) FailClosed() bool { return h.cfg.FailClosed }

// Stats returns the hook's counters. It may be called at any time.
func (h *Hook) Stats() HookStats {
	return HookStats{Allowed: h.allowed.Load(), Rejected: h.rejected.Load(), Rewritten: h.rewritten.Load(), Failed: h.failed.Load()}
}

// hookData is the data of a message.before call.
type hookData struct {
	Message protocol.Message `json:"message"`
}

// Check asks the hook about m, a message about to be stored (its seq not
// yet assigned), and returns its decision. An error means there is none:
// no answer within the timeout, a failure, or an answer that is not a
// valid decision (an unknown action, a rewrite to an empty text or one
// over protocol.MaxTextBytes, or not UTF-8). The reason of a rejection is
// cut to MaxReason bytes.
func (h *Hook) Check(ctx context.Context, m protocol.Message) (Decision, error) {
	start := time.Now()
	d, err := h.call(ctx, m)
	if h.observe != nil {
		h.observe(time.Since(start))
	}
	if err != nil {
		h.failed.Add(1)
		h.mu.Lock()
		h.failures++
		if !h.failing {
			h.failing, h.since = true, time.Now()
			effect := "stored as sent (fail-open)"
			if h.cfg.FailClosed {
				effect = "refused with 503 (fail-closed)"
			}
			h.log.Warn().Str("url", h.url).Str("error", err.Error()).
				Msgf("before-message hook failing: messages are %s until it answers", effect)
		}
		h.mu.Unlock()
		return Decision{}, err
	}
	h.mu.Lock()
	if h.failing {
		h.log.Info().Str("url", h.url).Dur("down", time.Since(h.since)).Int("failed_calls", h.failures).Msg("before-message hook answers again")
		h.failing, h.failures = false, 0
	}
	h.mu.Unlock()
	switch d.Action {
	case ActionAllow:
		h.allowed.Add(1)
	case ActionReject:
		h.rejected.Add(1)
	case ActionRewrite:
		h.rewritten.Add(1)
	}
	return d, nil
}

func (h *Hook) call(ctx context.Context, m protocol.Message) (Decision, error) {
	d, _ := json.Marshal(hookData{Message: m})
	ev := Event{ID: NewEventID(), Type: MessageBefore, TS: time.Now().UnixMilli(), Data: d}
	body, err := json.Marshal(ev)
	if err != nil {
		return Decision{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return Decision{}, errors.New("bad hook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "chatcluster-webhooks/1")
	req.Header.Set(HeaderEventID, ev.ID)
	req.Header.Set(HeaderEventType, MessageBefore)
	req.Header.Set(HeaderSignature, Sign(h.cfg.Secret, time.Now().Unix(), body))
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return Decision{}, fmt.Errorf("no answer within %v", h.cfg.Timeout)
		}
		return Decision{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, hookAnswerMax+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Decision{}, fmt.Errorf("no whole answer within %v", h.cfg.Timeout)
		}
		return Decision{}, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return Decision{}, fmt.Errorf("answered %s", resp.Status)
	}
	if len(b) > hookAnswerMax {
		return Decision{}, fmt.Errorf("answer over %d bytes", hookAnswerMax)
	}
	var dec Decision
	if err := json.Unmarshal(b, &dec); err != nil {
		return Decision{}, errors.New("answer is not a JSON decision")
	}
	return dec, dec.check()
}

// check validates a decision, cutting a long reason.
func (d *Decision) check() error {
	switch d.Action {
	case ActionAllow:
	case ActionReject:
		d.Reason = cut(strings.TrimSpace(d.Reason), MaxReason)
	case ActionRewrite:
		switch {
		case d.Text == "":
			return errors.New("rewrite to an empty text")
		case len(d.Text) > protocol.MaxTextBytes:
			return fmt.Errorf("rewrite to %d bytes, over the limit of %d", len(d.Text), protocol.MaxTextBytes)
		case !utf8.ValidString(d.Text):
			return errors.New("rewrite to a text that is not UTF-8")
		}
	default:
		return fmt.Errorf("unknown action %q (want allow, reject or rewrite)", d.Action)
	}
	return nil
}

// cut returns s cut to at most n bytes, on a rune boundary, valid UTF-8.
func cut(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
