package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
	"github.com/cistern-dev/cistern/testnet"
)

// The status page is tested in a real headless browser: Chromium from
// Debian's chromium package (scripts/setup.sh installs it), driven through
// the DevTools protocol by chromedp. Without it the tests skip, or fail
// under CISTERN_REQUIRE_E2E=1. CISTERN_CHROMIUM names another binary.
// Screenshots go to $CISTERN_ARTIFACTS when set, else to the test's
// temporary directory (logged).

// chromiumPath returns the browser to drive, skipping the test without one.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("CISTERN_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	msg := "no Chromium found (/usr/bin/chromium; scripts/setup.sh installs Debian's chromium package, or set CISTERN_CHROMIUM)"
	if os.Getenv("CISTERN_REQUIRE_E2E") == "1" {
		t.Fatal(msg + ", and CISTERN_REQUIRE_E2E=1")
	}
	t.Skip(msg)
	return ""
}

// browser is one headless tab, with the page errors it saw.
type browser struct {
	ctx context.Context

	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	b := &browser{ctx: ctx}
	// Start the browser, then record every uncaught exception and
	// console.error of the page.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil && ev.ExceptionDetails.Exception.Description != "" {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
				return
			}
			msg = "console." + string(ev.Type) + ":"
			for _, a := range ev.Args {
				msg += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		b.mu.Lock()
		b.errors = append(b.errors, msg)
		b.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// pageErrors returns the exceptions and console errors seen so far.
func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitPage polls a JavaScript condition until it is true.
func waitPage(t *testing.T, b *browser, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !eval[bool](t, b, "!!("+cond+")") {
		if errs := b.pageErrors(); len(errs) > 0 {
			t.Fatalf("waiting for %s: the page has errors: %q", what, errs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; page text:\n%s", what, eval[string](t, b, "document.body.innerText"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves the whole page as a PNG artifact and returns its path.
func screenshot(t *testing.T, b *browser, name string) string {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("CISTERN_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	return path
}

// cellText is the JavaScript for the text of a table's body.
func cellText(table string) string {
	return "document.querySelector('#" + table + " tbody').innerText"
}

func TestStatusPage_InABrowser(t *testing.T) {
	b := newBrowser(t)
	f := newStatusFixture(t)

	if err := chromedp.Do(b.ctx, chromedp.Navigate(f.srv.URL+"/status")); err != nil {
		t.Fatal(err)
	}
	waitPage(t, b, "the first draw", "document.body.dataset.loaded")

	// The charts have data once indexing ran for a few samples.
	for _, series := range []string{"records/s", "events/s"} {
		waitPage(t, b, "the "+series+" line", fmt.Sprintf(
			"(function(){var p=document.querySelector('#chart-throughput polyline[data-series=%q]');return p&&+p.dataset.points>=3})()", series))
	}
	waitPage(t, b, "nonzero throughput on the chart",
		"document.querySelector('#legend-throughput').innerText.indexOf('records/s') >= 0 && "+
			"document.querySelector('#chart-throughput polyline').getAttribute('points').split(' ').some(function(p){return +p.split(',')[1] < 160})")
	waitPage(t, b, "the lag and backfill charts", "+document.querySelector('#chart-lag').dataset.points>=3 && +document.querySelector('#chart-backfill').dataset.points>=3")
	// Axes are labelled, with units.
	for _, chart := range []string{"chart-throughput", "chart-lag", "chart-backfill"} {
		labels := eval[string](t, b, "Array.from(document.querySelectorAll('#"+chart+" text')).map(function(e){return e.textContent}).join('|')")
		for _, want := range []string{"time before now", "now", " s|"} {
			if !strings.Contains(labels, want) {
				t.Fatalf("%s labels %q lack %q", chart, labels, want)
			}
		}
	}
	if y := eval[string](t, b, "document.querySelector('#chart-throughput text[transform]').textContent"); y != "per second" {
		t.Fatalf("throughput y axis says %q", y)
	}

	// The failing host is listed first, with its reason.
	waitPage(t, b, "the failing host", cellText("hosts")+".indexOf("+jsString(f.downHost)+") >= 0")
	first := eval[string](t, b, "document.querySelector('#hosts tbody tr').innerText")
	if !strings.Contains(first, f.downHost) || !strings.Contains(first, "http: getRepo: 503") {
		t.Fatalf("first host row %q, want %s with its 503", first, f.downHost)
	}
	if cls := eval[string](t, b, "document.querySelector('#hosts tbody tr').className"); cls != "bad" {
		t.Fatalf("failing host row class %q, want bad", cls)
	}
	// The stalled consumer shows its lag.
	waitPage(t, b, "the stalled consumer", cellText("consumers")+".indexOf('stalled') >= 0")
	crow := eval[string](t, b, "document.querySelector('#consumers tbody tr').innerText")
	cells := strings.Split(crow, "\t")
	if len(cells) < 7 || cells[0] != f.consumer || cells[3] == "0" || !strings.HasSuffix(cells[4], " s") && !strings.Contains(cells[4], "min") {
		t.Fatalf("consumer row %q, want slow-app with its lag in events and time", crow)
	}
	// The last errors name the repo and the reason.
	errs := eval[string](t, b, cellText("errors"))
	if !strings.Contains(errs, f.down.DID().String()) || !strings.Contains(errs, "503") {
		t.Fatalf("errors table %q lacks down.test's failure", errs)
	}
	// And the verdict says what is wrong.
	if h := eval[string](t, b, "document.getElementById('health').textContent"); h != "needs attention" {
		t.Fatalf("health %q", h)
	}
	probs := eval[string](t, b, "document.getElementById('problems').innerText")
	if !strings.Contains(probs, "repo(s) failing backfill") || !strings.Contains(probs, "consumer slow-app is") {
		t.Fatalf("problems %q", probs)
	}
	// A few more refreshes, still without a script error.
	before := eval[string](t, b, "document.body.dataset.loaded")
	waitPage(t, b, "a refresh", "document.body.dataset.loaded !== "+jsString(before))
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Fatalf("page errors: %q", errs)
	}
	screenshot(t, b, "status-page.png")
}

// jsString quotes s for JavaScript.
func jsString(s string) string { return fmt.Sprintf("%q", s) }

// A host or DID with markup in it shows as written, and runs nothing; a
// report with thousands of hosts shows the worst with a count of the rest.
func TestStatusPage_EscapesWhatItShows(t *testing.T) {
	b := newBrowser(t)
	evil := `<img src=x onerror="window.pwned=1">`
	evilDID := `did:plc:"><script>window.pwned=2</script>`
	rep := httpapi.StatusReport{
		Version: httpapi.StatusVersion, Time: time.Now(), Health: "warning",
		Problems:     []string{"firehose " + evil + " is 2m0s behind the network"},
		Firehose:     []httpapi.FirehoseStatus{{Source: "wss://" + evil, BehindSeconds: 120, Cursor: 7}},
		HostsOmitted: 4975,
		Errors: []httpapi.ErrorStatus{{At: time.Now(), Kind: "backfill", Repo: evilDID, Host: evil,
			Reason: "http", Message: "getRepo: 500 " + evil}},
		Consumers: []httpapi.ConsumerStatus{{Name: "app", Kind: "stream", LagEvents: 5, LagSeconds: 3}},
	}
	for i := range 25 {
		h := httpapi.HostStatus{Reason: "http: " + evil}
		h.Host = fmt.Sprintf("pds%d.%s", i, evil)
		h.Failing = 25 - i
		rep.Hosts = append(rep.Hosts, h)
	}
	body := mustJSON(t, rep)
	api := httpapi.New(openIndexer(t, testnet.New(t), filter.Spec{}), httpapi.Options{})
	mux := http.NewServeMux()
	mux.Handle("GET /status", api.StatusPage())
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	if err := chromedp.Do(b.ctx, chromedp.Navigate(srv.URL+"/status")); err != nil {
		t.Fatal(err)
	}
	waitPage(t, b, "the first draw", "document.body.dataset.loaded")
	if v := eval[string](t, b, "String(window.pwned)"); v != "undefined" {
		t.Fatalf("markup from the report ran: window.pwned = %s", v)
	}
	if n := eval[float64](t, b, "document.querySelectorAll('main img, main script, td script').length"); n != 0 {
		t.Fatalf("%v elements made from the report's text", n)
	}
	host := eval[string](t, b, "document.querySelector('#hosts tbody td').textContent")
	if host != "pds0."+evil {
		t.Fatalf("host cell %q, want it as written", host)
	}
	if html := eval[string](t, b, "document.querySelector('#hosts tbody td').innerHTML"); !strings.Contains(html, "&lt;img") {
		t.Fatalf("host cell HTML %q, want the markup escaped", html)
	}
	if repo := eval[string](t, b, "document.querySelector('#errors tbody td:nth-child(3)').textContent"); repo != evilDID {
		t.Fatalf("repo cell %q, want %q", repo, evilDID)
	}
	if rows := eval[float64](t, b, "document.querySelectorAll('#hosts tbody tr').length"); rows != 25 {
		t.Fatalf("%v host rows, want 25", rows)
	}
	if more := eval[string](t, b, "document.getElementById('hosts-more').textContent"); !strings.Contains(more, "4975 more hosts") {
		t.Fatalf("hosts note %q, want the count of the rest", more)
	}
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Fatalf("page errors: %q", errs)
	}
	screenshot(t, b, "status-page-escaping.png")
}
