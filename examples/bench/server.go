package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServerResult is what the user's-path run measures: the examples/cistern
// binary with its defaults (the default resolver, handles checked), tracking
// every repo of an examples/testnet binary, over HTTP, as a user runs them.
type ServerResult struct {
	Repos         int     `json:"repos"`
	Records       int64   `json:"records"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"recordsPerSec"`
	ReposPerSec   float64 `json:"reposPerSec"`
	// PeakRSS and CPUSeconds are the cistern process's, from its start to
	// the last repo synced.
	PeakRSS    int64   `json:"peakRSSBytes"`
	CPUSeconds float64 `json:"cpuSeconds"`
	// Args are the flags given to cistern beyond the network and -track.
	Args []string `json:"args,omitempty"`
}

// runServerPath builds examples/testnet and examples/cistern into dir,
// starts a network of repos × records, runs cistern against it with -track
// and the extra args, and measures until every repo is synced. With
// profileDir set, it saves a CPU profile of the first profileSeconds and a
// goroutine dump taken 3 s in.
func runServerPath(dir string, repos, records int, extra []string, profileDir string, profileSeconds int,
	progress func(string, ...any)) (*ServerResult, error) {
	progress("server path: building examples/testnet and examples/cistern")
	for _, name := range []string{"testnet", "cistern"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name),
			"github.com/cistern-dev/cistern/examples/"+name).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go build examples/%s: %w\n%s", name, err, out)
		}
	}

	progress("server path: starting examples/testnet with %d accounts × %d records", repos, records)
	tn := exec.Command(filepath.Join(dir, "testnet"), "-listen", "127.0.0.1:0",
		"-accounts", strconv.Itoa(repos), "-records", strconv.Itoa(records), "-seed", "7")
	tn.Stderr = io.Discard
	tnOut, err := tn.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := tn.Start(); err != nil {
		return nil, err
	}
	defer stopProcess(tn)
	var urls struct{ PLC, PDS, Relay string }
	sc := bufio.NewScanner(tnOut)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			if err := json.Unmarshal([]byte(rest), &urls); err != nil {
				return nil, fmt.Errorf("testnet READY line: %w", err)
			}
			break
		}
	}
	if urls.PDS == "" {
		return nil, fmt.Errorf("testnet printed no READY line")
	}
	go io.Copy(io.Discard, tnOut)
	dids, err := listRepos(urls.PDS)
	if err != nil {
		return nil, err
	}
	if len(dids) != repos {
		return nil, fmt.Errorf("testnet lists %d repos, want %d", len(dids), repos)
	}

	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"-db", filepath.Join(dir, "server.db"), "-listen", listen,
		"-relay", urls.Relay, "-plc", urls.PLC, "-track", strings.Join(dids, ","), "-log-level", "error"}
	var debugAddr string
	if profileDir != "" {
		if debugAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "-debug-listen", debugAddr)
	}
	args = append(args, extra...)
	progress("server path: cistern -track <%d DIDs> %s", len(dids), strings.Join(extra, " "))
	srv := exec.Command(filepath.Join(dir, "cistern"), args...)
	srv.Stdout, srv.Stderr = io.Discard, os.Stderr
	start := time.Now()
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer stopProcess(srv)

	base := "http://" + listen
	if profileDir != "" {
		go saveProfiles(debugAddr, profileDir, profileSeconds)
	}
	var st struct {
		Repos   map[string]int64 `json:"repos"`
		Records int64            `json:"records"`
	}
	for {
		if err := getJSON(base+"/stats", &st); err == nil {
			if st.Repos["error"] > 0 {
				return nil, fmt.Errorf("%d repos failed to backfill", st.Repos["error"])
			}
			if st.Repos["synced"] >= int64(repos) {
				break
			}
		}
		if time.Since(start) > 30*time.Minute {
			return nil, fmt.Errorf("not synced after 30 minutes: %v", st.Repos)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	res := &ServerResult{Repos: repos, Records: st.Records, Seconds: elapsed.Seconds(),
		RecordsPerSec: float64(st.Records) / elapsed.Seconds(), ReposPerSec: float64(repos) / elapsed.Seconds(),
		PeakRSS: procPeakRSS(srv.Process.Pid), CPUSeconds: procCPUSeconds(srv.Process.Pid), Args: extra}
	return res, nil
}

// listRepos pages through the PDS's com.atproto.sync.listRepos.
func listRepos(pds string) ([]string, error) {
	var dids []string
	cursor := ""
	for {
		var page struct {
			Cursor string `json:"cursor"`
			Repos  []struct {
				DID string `json:"did"`
			} `json:"repos"`
		}
		u := pds + "/xrpc/com.atproto.sync.listRepos?limit=1000"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := getJSON(u, &page); err != nil {
			return nil, fmt.Errorf("listRepos: %w", err)
		}
		for _, r := range page.Repos {
			dids = append(dids, r.DID)
		}
		if page.Cursor == "" || len(page.Repos) == 0 {
			return dids, nil
		}
		cursor = page.Cursor
	}
}

func getJSON(u string, out any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// saveProfiles saves a CPU profile of the first seconds of the run and a
// goroutine dump 3 s in, from cistern's -debug-listen address.
func saveProfiles(addr, dir string, seconds int) {
	save := func(path, name string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: profile:", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: profile:", err)
			return
		}
		defer f.Close()
		io.Copy(f, resp.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil { // wait for the debug listener
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	go func() {
		time.Sleep(3 * time.Second)
		save("/debug/pprof/goroutine?debug=1", "server.goroutines.txt")
	}()
	save("/debug/pprof/profile?seconds="+strconv.Itoa(seconds), "server.cpu.pprof")
}

// freeAddr returns a loopback address with a port free now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// procPeakRSS returns the peak RSS (VmHWM) of process pid.
func procPeakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return -1
}

// procCPUSeconds returns the user+system CPU time of process pid.
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which is in parentheses): utime is
	// the 14th field of the line, stime the 15th, in clock ticks.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}
