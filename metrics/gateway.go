package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Gateway is the gateway's collectors. Safe from any goroutine.
type Gateway struct {
	*Deps

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	LoginOK, LoginDenied, LoginFailed prometheus.Counter
	LoginThrottled                    prometheus.Counter
	RegisterOK, RegisterTaken         prometheus.Counter
	RegisterInvalid, RegisterFailed   prometheus.Counter
	NodeListOK, NodeListEmpty         prometheus.Counter
	NodeListFailed                    prometheus.Counter
}

// NewGateway registers the gateway's metrics in reg and returns them.
func NewGateway(reg prometheus.Registerer) *Gateway {
	g := &Gateway{
		Deps: newDeps(reg, false),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "gateway", Name: "http_requests_total",
			Help: "HTTP requests answered, by route (the matched pattern, e.g. \"GET /api/nodes\") and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "gateway", Name: "http_request_duration_seconds",
			Help:    "How long HTTP requests took to answer, by route.",
			Buckets: LatencyBuckets,
		}, []string{"route"}),
	}
	logins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "gateway", Name: "logins_total",
		Help: "POST /api/login by result: ok (token issued), denied (wrong username or password), throttled (refused unchecked after too many failed logins), error (a store failed).",
	}, []string{"result"})
	regs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "gateway", Name: "registrations_total",
		Help: "POST /api/register by result: ok, taken, invalid, error.",
	}, []string{"result"})
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "gateway", Name: "node_list_reads_total",
		Help: "Reads of the live-node list from Redis by result: ok, empty (no leader publishes one), error.",
	}, []string{"result"})
	reg.MustRegister(g.requests, g.duration, logins, regs, reads)
	g.LoginOK, g.LoginDenied, g.LoginFailed = logins.WithLabelValues("ok"), logins.WithLabelValues("denied"), logins.WithLabelValues("error")
	g.LoginThrottled = logins.WithLabelValues("throttled")
	g.RegisterOK, g.RegisterTaken = regs.WithLabelValues("ok"), regs.WithLabelValues("taken")
	g.RegisterInvalid, g.RegisterFailed = regs.WithLabelValues("invalid"), regs.WithLabelValues("error")
	g.NodeListOK, g.NodeListEmpty, g.NodeListFailed = reads.WithLabelValues("ok"), reads.WithLabelValues("empty"), reads.WithLabelValues("error")
	return g
}

// ObserveRequest records one answered HTTP request. route is the pattern
// the request matched ("" counts as "unmatched"), so the label set stays
// that of the routes.
func (g *Gateway) ObserveRequest(route string, code int, took time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	g.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	g.duration.WithLabelValues(route).Observe(took.Seconds())
}
