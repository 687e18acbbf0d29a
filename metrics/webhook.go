package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chatcluster/webhook"
)

// WebhookSources are what the webhook metrics read at scrape time. Every
// field is optional: a nil one leaves its metrics out (a node without
// endpoints has no dispatcher). They must be safe from the scraping
// goroutine.
type WebhookSources struct {
	Endpoints func() []webhook.EndpointStats // the dispatcher's counters, by endpoint
	Active    func() bool                    // the dispatcher holds the lease
	// Backlog reads each endpoint's backlog (a Redis round trip): called
	// at most once per BacklogTTL, bounded by BacklogTimeout.
	Backlog func(context.Context) (map[string]int64, error)
	Events  func() webhook.EmitterStats // the node's login and logout events
	Hook    func() webhook.HookStats    // the before-message hook
}

// Webhooks are the webhook collectors the node updates itself.
type Webhooks struct {
	HookSeconds prometheus.Histogram // how long the before-message hook took, answered or not
}

// NewWebhooks registers the webhook metrics in reg and returns those the
// node updates.
func NewWebhooks(reg prometheus.Registerer, src WebhookSources) *Webhooks {
	w := &Webhooks{
		HookSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "before_message_hook_duration_seconds",
			Help:    "Time a message waited for the before-message hook, answered or not (it is bounded by the hook's timeout).",
			Buckets: LatencyBuckets,
		}),
	}
	reg.MustRegister(w.HookSeconds, &webhookCollector{src: src, backlog: cachedMap{read: src.Backlog}})
	return w
}

var (
	whDelivered = prometheus.NewDesc(Namespace+"_webhook_deliveries_total",
		"Events an endpoint took (answered 2xx), as this node's dispatcher delivered them.", []string{"endpoint"}, nil)
	whFailed = prometheus.NewDesc(Namespace+"_webhook_failures_total",
		"Delivery attempts that failed (an answer other than 2xx, no answer in time, no connection); each is retried or dead-lettered.", []string{"endpoint"}, nil)
	whRetried = prometheus.NewDesc(Namespace+"_webhook_retries_total",
		"Delivery attempts after an event's first.", []string{"endpoint"}, nil)
	whDead = prometheus.NewDesc(Namespace+"_webhook_dead_letters_total",
		"Events put in the dead-letter stream after the attempts allowed.", []string{"endpoint"}, nil)
	whDropped = prometheus.NewDesc(Namespace+"_webhook_dropped_total",
		"Events an endpoint lost unread because it fell further behind than the queue holds (--webhook-queue-cap).", []string{"endpoint"}, nil)
	whUp = prometheus.NewDesc(Namespace+"_webhook_endpoint_up",
		"1 unless the endpoint's last delivery attempt by this node failed.", []string{"endpoint"}, nil)
	whBacklog = prometheus.NewDesc(Namespace+"_webhook_backlog",
		"Events queued that the endpoint has not taken yet (not read, or read and not delivered), cluster-wide; read at most once a second.", []string{"endpoint"}, nil)
	whActive = prometheus.NewDesc(Namespace+"_webhook_dispatcher_active",
		"1 while this node's webhook dispatcher holds the lease and delivers, else 0.", nil, nil)
	whQueued = prometheus.NewDesc(Namespace+"_webhook_events_queued_total",
		"Login and logout events this node added to the webhook queue.", nil, nil)
	whEventsDropped = prometheus.NewDesc(Namespace+"_webhook_events_dropped_total",
		"Login and logout events this node dropped: its buffer was full while Redis was slow or down.", nil, nil)
	whHook = prometheus.NewDesc(Namespace+"_before_message_hook_total",
		"Messages the before-message hook was asked about, by outcome: allow, reject, rewrite, error (no usable answer in time).", []string{"outcome"}, nil)
)

// webhookCollector reads the webhook sources at scrape time.
type webhookCollector struct {
	src     WebhookSources
	backlog cachedMap
}

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{whDelivered, whFailed, whRetried, whDead, whDropped, whUp, whBacklog, whActive, whQueued, whEventsDropped, whHook} {
		ch <- d
	}
}

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.Endpoints != nil {
		for _, e := range c.src.Endpoints() {
			counter(whDelivered, e.Delivered, e.Name)
			counter(whFailed, e.Failed, e.Name)
			counter(whRetried, e.Retried, e.Name)
			counter(whDead, e.Dead, e.Name)
			counter(whDropped, e.Dropped, e.Name)
			gauge(whUp, b2f(e.Up), e.Name)
		}
	}
	if c.src.Backlog != nil {
		for name, n := range c.backlog.value() {
			gauge(whBacklog, float64(n), name)
		}
	}
	if c.src.Active != nil {
		gauge(whActive, b2f(c.src.Active()))
	}
	if c.src.Events != nil {
		s := c.src.Events()
		counter(whQueued, s.Queued)
		counter(whEventsDropped, s.Dropped)
	}
	if c.src.Hook != nil {
		s := c.src.Hook()
		counter(whHook, s.Allowed, "allow")
		counter(whHook, s.Rejected, "reject")
		counter(whHook, s.Rewritten, "rewrite")
		counter(whHook, s.Failed, "error")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// cachedMap is cached for a read that returns one value per label.
type cachedMap struct {
	read func(context.Context) (map[string]int64, error)

	mu  sync.Mutex // held across a read, so concurrent scrapes share it
	at  time.Time  // guarded by mu
	val map[string]int64
}

func (c *cachedMap) value() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < BacklogTTL {
		return c.val
	}
	ctx, cancel := context.WithTimeout(context.Background(), BacklogTimeout)
	v, err := c.read(ctx)
	cancel()
	c.at = time.Now()
	if err == nil {
		c.val = v
	}
	return c.val
}
