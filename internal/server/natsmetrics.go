package server

import (
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
)

// natsCollector exports the embedded NATS server's traffic, connections
// and JetStream consumers (the fleet bench reads them; so can operators).
type natsCollector struct {
	ns                                 *natsserver.Server
	inMsgs, outMsgs, inBytes, outBytes *prometheus.Desc
	connections, consumers, jsMessages *prometheus.Desc
}

func newNATSCollector(ns *natsserver.Server) *natsCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &natsCollector{ns: ns,
		inMsgs:      d("harmony_nats_in_msgs_total", "Messages the embedded NATS server received."),
		outMsgs:     d("harmony_nats_out_msgs_total", "Messages the embedded NATS server sent."),
		inBytes:     d("harmony_nats_in_bytes_total", "Payload bytes the embedded NATS server received."),
		outBytes:    d("harmony_nats_out_bytes_total", "Payload bytes the embedded NATS server sent."),
		connections: d("harmony_nats_connections", "Client connections to the embedded NATS server."),
		consumers:   d("harmony_jetstream_consumers", "JetStream consumers on the embedded server (every KV watch is one)."),
		jsMessages:  d("harmony_jetstream_messages", "Messages stored in JetStream on the embedded server."),
	}
}

func (c *natsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inMsgs, c.outMsgs, c.inBytes, c.outBytes, c.connections, c.consumers, c.jsMessages} {
		ch <- d
	}
}

func (c *natsCollector) Collect(ch chan<- prometheus.Metric) {
	if v, err := c.ns.Varz(nil); err == nil {
		ch <- prometheus.MustNewConstMetric(c.inMsgs, prometheus.CounterValue, float64(v.InMsgs))
		ch <- prometheus.MustNewConstMetric(c.outMsgs, prometheus.CounterValue, float64(v.OutMsgs))
		ch <- prometheus.MustNewConstMetric(c.inBytes, prometheus.CounterValue, float64(v.InBytes))
		ch <- prometheus.MustNewConstMetric(c.outBytes, prometheus.CounterValue, float64(v.OutBytes))
		ch <- prometheus.MustNewConstMetric(c.connections, prometheus.GaugeValue, float64(v.Connections))
	}
	if j, err := c.ns.Jsz(nil); err == nil {
		ch <- prometheus.MustNewConstMetric(c.consumers, prometheus.GaugeValue, float64(j.Consumers))
		ch <- prometheus.MustNewConstMetric(c.jsMessages, prometheus.GaugeValue, float64(j.Messages))
	}
}
