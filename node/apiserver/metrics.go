package apiserver

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API request metrics.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_apiserver_requests_total",
			Help: "Kubernetes API requests by verb, resource and HTTP status code.",
		}, []string{"verb", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_apiserver_request_duration_seconds",
			Help:    "Kubernetes API request latency by verb and resource (watches: stream lifetime).",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60},
		}, []string{"verb", "resource"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, err
				}
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(verb, resource string, code int, d time.Duration) {
	m.requests.WithLabelValues(verb, resource, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(verb, resource).Observe(d.Seconds())
}
