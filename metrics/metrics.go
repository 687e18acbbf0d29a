package metrics

import (
	"context"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace is the prefix of every metric name defined here.
const Namespace = "chat"

// LatencyBuckets are the histogram buckets, in seconds, of every latency
// metric: from 100µs (Redis on loopback) to 5s (a slow store).
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewRegistry returns a new registry holding the Go runtime and process
// collectors. Each Server and Gateway has its own.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics of reg in the Prometheus exposition format.
// A collector that fails does not hide the others.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// AdminMux returns the handler of an admin listener: GET /metrics and the
// pprof endpoints under /debug/pprof/. The pprof handlers are registered on
// this mux only. (Importing net/http/pprof also registers them on
// http.DefaultServeMux, which nothing in this project serves.)
func AdminMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(reg))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// maxNames bounds the label values a timer hands out; further names share
// one more child, "other".
const maxNames = 64

// timer is a latency histogram and an error counter, both labelled by one
// name (a command or an operation). Its children are created on first use
// and then found without a lock or a label lookup: the name map is copied
// on write.
type timer struct {
	hist *prometheus.HistogramVec
	errs *prometheus.CounterVec

	mu   sync.Mutex                     // serializes adding a name
	kids atomic.Pointer[map[string]kid] // replaced, never modified, under mu
}

type kid struct {
	obs  prometheus.Observer
	errs prometheus.Counter
}

// newTimer registers <Namespace>_<base>_duration_seconds and
// <Namespace>_<base>_errors_total, labelled by label.
func newTimer(reg prometheus.Registerer, base, label, what string) *timer {
	t := &timer{
		hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: base + "_duration_seconds",
			Help:    "How long " + what + " took, by " + label + ".",
			Buckets: LatencyBuckets,
		}, []string{label}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: base + "_errors_total",
			Help: "How many " + what + " failed, by " + label + ".",
		}, []string{label}),
	}
	empty := map[string]kid{}
	t.kids.Store(&empty)
	reg.MustRegister(t.hist, t.errs)
	return t
}

// observe records one call. Safe from any goroutine.
func (t *timer) observe(name string, d time.Duration, failed bool) {
	k, ok := (*t.kids.Load())[name]
	if !ok {
		k = t.add(name)
	}
	k.obs.Observe(d.Seconds())
	if failed {
		k.errs.Inc()
	}
}

func (t *timer) add(name string) kid {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.kids.Load()
	if k, ok := cur[name]; ok {
		return k
	}
	if name == "" {
		name = "unknown"
	}
	if len(cur) >= maxNames {
		if k, ok := cur["other"]; ok {
			return k
		}
		name = "other"
	}
	k := kid{obs: t.hist.WithLabelValues(name), errs: t.errs.WithLabelValues(name)}
	next := make(map[string]kid, len(cur)+1)
	for n, v := range cur {
		next[n] = v
	}
	next[name] = k
	t.kids.Store(&next)
	return k
}

// cached reads a value that costs a round trip (the history backlog) at
// most once per ttl, however often and however many scrapers ask. When the
// read fails it keeps the last value and counts the failure.
type cached struct {
	read    func(context.Context) (int64, error)
	ttl     time.Duration
	timeout time.Duration
	errs    prometheus.Counter

	mu  sync.Mutex // held across a read, so concurrent scrapes share it
	at  time.Time  // when read last ran; guarded by mu
	val float64    // guarded by mu
}

func (c *cached) value() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.ttl {
		return c.val
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	v, err := c.read(ctx)
	cancel()
	c.at = time.Now()
	if err != nil {
		c.errs.Inc()
		return c.val
	}
	c.val = float64(v)
	return c.val
}

// labelled is a collector of one gauge whose label values are only known at
// scrape time (one series per peer link).
type labelled struct {
	desc *prometheus.Desc
	read func() map[string]int
}

func (l *labelled) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

func (l *labelled) Collect(ch chan<- prometheus.Metric) {
	for v, n := range l.read() {
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(n), v)
	}
}
