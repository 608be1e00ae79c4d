package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/tapcompat"
	"github.com/cistern-dev/cistern/testnet"
)

// boundedLabels are the only label names /metrics may use, each with what
// bounds its values. A label whose values grow with the data (a DID, a PDS
// host, a collection) must not be added: per-host and per-repo detail
// belongs in the status JSON.
var boundedLabels = map[string]string{
	"source":   "the configured firehose sources",
	"kind":     "the firehose message kinds",
	"reason":   "the reject and skip reasons",
	"state":    "the repo states",
	"consumer": "durable consumers, at most httpapi.MaxConsumerSeries",
	"version":  "go_info's Go version",
}

// cisternRules are conventions promlint does not check.
func cisternRules(mf *dto.MetricFamily) []error {
	var errs []error
	name := mf.GetName()
	if !strings.HasPrefix(name, "cistern_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
		errs = append(errs, errors.New("name does not start with cistern_"))
	}
	if mf.GetType() != dto.MetricType_COUNTER && strings.HasSuffix(name, "_total") {
		errs = append(errs, errors.New("only counters end in _total"))
	}
	if strings.Contains(name, "_per_") {
		errs = append(errs, errors.New("a rate computed in the process: export the counter and let PromQL take rate()"))
	}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if _, ok := boundedLabels[l.GetName()]; !ok {
				errs = append(errs, fmt.Errorf("label %q is not one of the bounded labels", l.GetName()))
			}
		}
	}
	return errs
}

// scrapeRunningServer starts a server over an Indexer that has done a bit
// of everything /metrics reports (backfill, live commits, a firehose
// reconnect, a saved cursor, a durable consumer, tap delivery) and returns
// its /metrics answer.
func scrapeRunningServer(t *testing.T) []byte {
	t.Helper()
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 3))
	did := alice.DID().String()
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{did}})
	tap, err := tapcompat.New(ix, tapcompat.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	tapCtx, stopTap := context.WithCancel(context.Background())
	tapDone := make(chan error, 1)
	go func() { tapDone <- tap.Run(tapCtx) }()
	t.Cleanup(func() {
		stopTap()
		if err := <-tapDone; err != nil {
			t.Errorf("tap Run: %v", err)
		}
	})
	api := serve(t, ix, httpapi.Options{Tap: tap}).URL
	waitSynced(t, ix, did)

	// A durable consumer that acknowledged the first event only.
	ctx := t.Context()
	sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Name: "metrics-test"})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-sub.Events()
	if err := sub.Ack(ctx, ev.ID); err != nil {
		t.Fatal(err)
	}
	sub.Close()

	// A live commit, then a dropped firehose connection.
	waitFor(t, "the firehose connection", func() bool { return net.Relay().Connections() > 0 })
	if _, err := alice.CreateRecord(posts, testnet.Post(posts, "live")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the live commit", func() bool {
		n, _ := ix.CountRecords(ctx, did, posts)
		return n == 4
	})
	net.Relay().DropConnections()
	var body []byte
	waitFor(t, "a reconnect, a saved cursor and a tap consumer in /metrics", func() bool {
		body = get(t, api+"/metrics").Body
		mfs := parseMetrics(t, body)
		return value(mfs, "cistern_firehose_reconnects_total") >= 1 &&
			value(mfs, "cistern_firehose_connected") == 1 &&
			mfs["cistern_firehose_cursor_age_seconds"] != nil &&
			mfs["cistern_tap_lag_events"] != nil
	})
	return body
}

func parseMetrics(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value returns the sum of a family's samples (0 when it has none).
func value(mfs map[string]*dto.MetricFamily, name string) float64 {
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		sum += m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
	}
	return sum
}

// labelNames returns the label names a family's samples carry.
func labelNames(mf *dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			out[l.GetName()] = true
		}
	}
	return out
}

// TestMetrics_Conventions scrapes /metrics from a running server and holds
// every metric to Prometheus's conventions (promlint, and the rules
// above), checks that the figures of the operator's view are all there,
// and that the example Grafana dashboard and the alert rules in
// docs/operations.md name only metrics and labels that exist.
func TestMetrics_Conventions(t *testing.T) {
	body := scrapeRunningServer(t)
	mfs := parseMetrics(t, body)

	t.Run("promlint", func(t *testing.T) {
		l := promlint.New(bytes.NewReader(body))
		l.AddCustomValidations(cisternRules)
		problems, err := l.Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	})

	t.Run("the operator's figures", func(t *testing.T) {
		tests := []struct {
			figure string
			name   string
			typ    dto.MetricType
			labels []string
		}{
			{"seconds behind each firehose source", "cistern_firehose_lag_seconds", dto.MetricType_GAUGE, []string{"source"}},
			{"cursor age", "cistern_firehose_cursor_age_seconds", dto.MetricType_GAUGE, []string{"source"}},
			{"reconnects", "cistern_firehose_reconnects_total", dto.MetricType_COUNTER, []string{"source"}},
			{"connected", "cistern_firehose_connected", dto.MetricType_GAUGE, []string{"source"}},
			{"backfill in flight", "cistern_backfill_in_flight_repos", dto.MetricType_GAUGE, nil},
			{"backfill queued", "cistern_backfill_queued_repos", dto.MetricType_GAUGE, nil},
			{"backfill failing", "cistern_backfill_failed_total", dto.MetricType_COUNTER, nil},
			{"repos failing", "cistern_repos", dto.MetricType_GAUGE, []string{"state"}},
			{"backfill rate limited", "cistern_backfill_rate_limited_total", dto.MetricType_COUNTER, nil},
			{"hosts rate limited", "cistern_backfill_rate_limited_hosts", dto.MetricType_GAUGE, nil},
			{"backfill bytes", "cistern_backfill_bytes_total", dto.MetricType_COUNTER, nil},
			{"rejected commits by reason", "cistern_commits_rejected_total", dto.MetricType_COUNTER, []string{"reason"}},
			{"held live commits", "cistern_held_commits", dto.MetricType_GAUGE, nil},
			{"held live commit bytes", "cistern_held_bytes", dto.MetricType_GAUGE, nil},
			{"durable consumer lag", "cistern_consumer_lag_events", dto.MetricType_GAUGE, []string{"consumer"}},
			{"durable consumer last ack", "cistern_consumer_last_ack_timestamp_seconds", dto.MetricType_GAUGE, []string{"consumer"}},
			{"handle checks pending", "cistern_handle_checks_queued", dto.MetricType_GAUGE, nil},
			{"disk size", "cistern_store_size_bytes", dto.MetricType_GAUGE, nil},
			{"events throughput", "cistern_events_written_total", dto.MetricType_COUNTER, nil},
			{"backfill records throughput", "cistern_backfill_records_total", dto.MetricType_COUNTER, nil},
			{"live records throughput", "cistern_commit_ops_applied_total", dto.MetricType_COUNTER, nil},
		}
		for _, tt := range tests {
			mf := mfs[tt.name]
			if mf == nil {
				t.Errorf("%s: no %s", tt.figure, tt.name)
				continue
			}
			if mf.GetType() != tt.typ {
				t.Errorf("%s: %s is a %v, want a %v", tt.figure, tt.name, mf.GetType(), tt.typ)
			}
			got := labelNames(mf)
			want := map[string]bool{}
			for _, l := range tt.labels {
				want[l] = true
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: %s has labels %v, want %v", tt.figure, tt.name, got, want)
			}
		}
	})

	t.Run("values", func(t *testing.T) {
		newest := value(mfs, "cistern_event_newest_id")
		found := false
		for _, m := range mfs["cistern_consumer_lag_events"].GetMetric() {
			if m.GetLabel()[0].GetValue() == "metrics-test" {
				found = true
				if m.GetGauge().GetValue() != newest-1 {
					t.Errorf("metrics-test acknowledged event 1 of %v: lag %v", newest, m.GetGauge().GetValue())
				}
			}
		}
		if !found {
			t.Error("no lag for the durable consumer metrics-test")
		}
		if got := value(mfs, "cistern_events_written_total"); got != newest || newest < 4 {
			t.Errorf("%v events written, newest id %v", got, newest)
		}
		if n := len(mfs["cistern_repos"].GetMetric()); n != 9 {
			t.Errorf("cistern_repos has %d states, want all 9 (zeros included)", n)
		}
		if lag := value(mfs, "cistern_firehose_lag_seconds"); lag < 0 || lag > 60 {
			t.Errorf("firehose lag %v s just after a live commit", lag)
		}
	})

	t.Run("grafana dashboard", func(t *testing.T) {
		raw, err := os.ReadFile("../docs/grafana-dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		var dash any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatalf("docs/grafana-dashboard.json: %v", err)
		}
		exprs := collectExprs(dash, "")
		if len(exprs) < 20 {
			t.Fatalf("the dashboard has %d queries", len(exprs))
		}
		for _, e := range exprs {
			checkExpr(t, mfs, e)
		}
	})

	t.Run("alert rules in docs", func(t *testing.T) {
		raw, err := os.ReadFile("../docs/operations.md")
		if err != nil {
			t.Fatal(err)
		}
		var exprs []string
		for _, m := range regexp.MustCompile(`(?m)^\s*expr:\s*(.+)$`).FindAllStringSubmatch(string(raw), -1) {
			exprs = append(exprs, strings.Trim(strings.TrimSpace(m[1]), "'"))
		}
		if len(exprs) < 6 {
			t.Fatalf("docs/operations.md has %d alert expressions", len(exprs))
		}
		for _, e := range exprs {
			checkExpr(t, mfs, e)
		}
	})
}

// collectExprs returns every PromQL string of a Grafana dashboard: the
// "expr" of targets and the "query" of template variables.
func collectExprs(v any, key string) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, collectExprs(v[k], k)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, collectExprs(e, key)...)
		}
	case string:
		if key == "expr" || (key == "query" && strings.Contains(v, "(")) {
			out = append(out, v)
		}
	}
	return out
}

var (
	metricName = regexp.MustCompile(`\b(?:cistern|go|process)_[a-zA-Z0-9_]*`)
	selector   = regexp.MustCompile(`\b((?:cistern|go|process)_[a-zA-Z0-9_]*)\s*\{([^}]*)\}`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	function   = regexp.MustCompile(`\b([a-z_]+)\s*\(`)
)

// promqlWords are the PromQL functions, aggregations and keywords the
// dashboard and alerts may use; anything else followed by "(" is a typo.
var promqlWords = []string{"abs", "and", "avg", "avg_over_time", "by", "clamp_min", "clamp_max", "count",
	"delta", "deriv", "histogram_quantile", "increase", "label_values", "max", "max_over_time", "min",
	"min_over_time", "on", "or", "predict_linear", "rate", "sum", "time", "topk", "unless", "without",
	"ignoring", "group_left", "vector", "absent", "changes", "resets", "bottomk", "irate", "timestamp"}

// checkExpr fails t unless every metric e names exists in mfs, with every
// label e matches or groups by, and its functions and brackets are sound.
func checkExpr(t *testing.T, mfs map[string]*dto.MetricFamily, e string) {
	t.Helper()
	names := metricName.FindAllString(e, -1)
	if len(names) == 0 {
		t.Errorf("%q names no metric", e)
		return
	}
	// Prometheus adds instance and job to every series it scrapes.
	labels := map[string]bool{"le": true, "instance": true, "job": true}
	for _, n := range names {
		mf := mfs[n]
		if mf == nil {
			t.Errorf("%q: no metric %s in /metrics", e, n)
			continue
		}
		for l := range labelNames(mf) {
			labels[l] = true
		}
	}
	for _, m := range selector.FindAllStringSubmatch(e, -1) {
		known := labelNames(mfs[m[1]])
		for _, l := range matcher.FindAllStringSubmatch(m[2], -1) {
			if !known[l[1]] && l[1] != "instance" && l[1] != "job" {
				t.Errorf("%q: %s has no label %q", e, m[1], l[1])
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(e, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !labels[l] {
				t.Errorf("%q: groups by %q, which none of its metrics has", e, l)
			}
		}
	}
	for _, f := range function.FindAllStringSubmatch(e, -1) {
		if !slices.Contains(promqlWords, f[1]) {
			t.Errorf("%q: unknown function %q", e, f[1])
		}
	}
	depth := map[rune]int{}
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, r := range e {
		switch r {
		case '(', '[', '{':
			depth[r]++
		case ')', ']', '}':
			if depth[pairs[r]]--; depth[pairs[r]] < 0 {
				t.Errorf("%q: unbalanced %q", e, r)
			}
		}
	}
	for r, d := range depth {
		if d != 0 {
			t.Errorf("%q: unbalanced %q", e, r)
		}
	}
}

// The rules promlint lacks catch what they are meant to catch.
func TestCisternRules(t *testing.T) {
	family := func(name string, typ dto.MetricType, labels ...string) *dto.MetricFamily {
		m := &dto.Metric{}
		for _, l := range labels {
			m.Label = append(m.Label, &dto.LabelPair{Name: &l, Value: new("v")})
		}
		return &dto.MetricFamily{Name: &name, Type: &typ, Metric: []*dto.Metric{m}}
	}
	tests := []struct {
		name string
		mf   *dto.MetricFamily
		want string // "" for no problem
	}{
		{"a counter", family("cistern_commits_applied_total", dto.MetricType_COUNTER), ""},
		{"a gauge with a bounded label", family("cistern_repos", dto.MetricType_GAUGE, "state"), ""},
		{"Go's own", family("go_goroutines", dto.MetricType_GAUGE), ""},
		{"another namespace", family("indexer_records", dto.MetricType_GAUGE), "cistern_"},
		{"a gauge named like a counter", family("cistern_records_total", dto.MetricType_GAUGE), "only counters"},
		{"a rate computed in the process", family("cistern_backfill_records_per_second", dto.MetricType_GAUGE), "rate()"},
		{"an unbounded label", family("cistern_backfill_bytes_total", dto.MetricType_COUNTER, "host"), `"host"`},
	}
	for _, tt := range tests {
		errs := cisternRules(tt.mf)
		switch {
		case tt.want == "" && len(errs) > 0:
			t.Errorf("%s: %v", tt.name, errs)
		case tt.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.want)):
			t.Errorf("%s: %v, want one problem saying %q", tt.name, errs, tt.want)
		}
	}
}

// Durable consumers are reported one by one up to MaxConsumerSeries, those
// furthest behind first; cistern_consumers counts them all.
func TestMetrics_ConsumerSeriesBounded(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(posts, 3))
	did := alice.DID().String()
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{did}})
	waitSynced(t, ix, did)
	api := serve(t, ix, httpapi.Options{}).URL
	ctx := t.Context()

	// The stalled consumers sort after the others by name: only their lag
	// puts them in the report.
	const behind = 5
	ack := func(name string, events int) {
		t.Helper()
		sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		for range events {
			ev := <-sub.Events()
			if err := sub.Ack(ctx, ev.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range httpapi.MaxConsumerSeries {
		ack(fmt.Sprintf("caught-up-%03d", i), 3)
	}
	for i := range behind {
		ack(fmt.Sprintf("stalled-%d", i), 1)
	}

	mfs := parseMetrics(t, get(t, api+"/metrics").Body)
	if n := value(mfs, "cistern_consumers"); n != httpapi.MaxConsumerSeries+behind {
		t.Errorf("cistern_consumers = %v, want %d", n, httpapi.MaxConsumerSeries+behind)
	}
	for _, name := range []string{"cistern_consumer_lag_events", "cistern_consumer_last_ack_timestamp_seconds"} {
		if n := len(mfs[name].GetMetric()); n != httpapi.MaxConsumerSeries {
			t.Errorf("%s has %d series, want %d", name, n, httpapi.MaxConsumerSeries)
		}
	}
	reported := map[string]bool{}
	for _, m := range mfs["cistern_consumer_lag_events"].GetMetric() {
		reported[m.GetLabel()[0].GetValue()] = true
	}
	for i := range behind {
		if name := fmt.Sprintf("stalled-%d", i); !reported[name] {
			t.Errorf("%s, the furthest behind, is not reported", name)
		}
	}
}
