// Command bench measures cistern end to end on this machine and prints a
// table (and, with -json, writes the numbers as JSON).
//
// It starts the simulated network of package testnet in this process,
// generates -repos accounts of -records records each, and runs every
// indexer phase in a child process (this binary with -role), so that the
// peak RSS reported for a phase is the indexer's own, not the network's:
//
//   - backfill: a fresh store tracks every generated repo explicitly and
//     backfills them (getRepo, signature check with -verify full, MST walk,
//     diff, records and events stored); repos/s and records/s from Run to
//     the last repo synced.
//
//   - live: -live-commits commits are written to the network first (the
//     relay keeps them all), then the backfilled store follows the firehose
//     from the cursor just before them and applies the backlog as fast as
//     it can (commits/s), once with full verification (signature, commit
//     CID, rev, sync 1.1 inversion) and once with none. Then, with full
//     verification, a load of -lag-rate commits/s for -lag-seconds measures
//     the lag from a record's createdAt (set by the producer when it signs
//     the commit) to the event reaching a live subscriber.
//
//   - live, spread: the same measure on a second backlog spread over
//     -spread-repos new accounts of 10 records each (backfilled first),
//     each commit to an account picked at random: on the network
//     consecutive commits mostly come from different repos, so commits
//     rarely share the pages of one repo in a transaction. Profiles are
//     named *-spread.cpu.pprof.
//
//   - stream: one subscriber, then -subscribers subscribers at once, replay
//     the event log from cursor 0 (events/s, summed over subscribers).
//
//   - server (the user's path): the examples/testnet and examples/cistern
//     binaries are built and started as a user runs them: cistern with its
//     defaults (the default resolver, handles checked) and -track with
//     every DID the testnet lists, over HTTP; records/s from the start of
//     the cistern process to the last repo synced (its /stats), with its
//     peak RSS and CPU time. With BENCH_PROFILE=dir, a CPU profile and a
//     goroutine dump of the server are saved there (server.cpu.pprof,
//     server.goroutines.txt).
//
//   - scale (-scale 1M,10M,50M, instead of the phases above): one store is
//     grown to each size in turn, backfilling repos of -records records
//     that a bench-local source builds on demand (each repo's commit signed
//     with a key derived from its index when its getRepo is served, over
//     -scale-templates record sets; nothing per repo is kept), with
//     verification on and a live load of -scale-live-rate commits/s on
//     -scale-live-repos testnet repos throughout. At each size: records/s
//     from 90% of the size to the size (and per CPU-second), disk bytes
//     per record, RSS, then getRecord and listRecords latency (p50, p99)
//     over -scale-window seconds while the backfill and the live commits
//     go on. -scale-deadline ends the growth early and measures the size
//     reached; -scale-profile dir saves a CPU profile per size. It takes
//     hours at 50M and is not run in CI (its test runs 2k,5k).
//
// Raw limits measured on the same machine, for comparison: bbolt's grouped
// write rate (1000 puts per fsynced transaction), the CAR parse rate
// (go-car blocks and indigo's LoadRepoFromCAR) and the K-256 signature
// verification rate on one core.
//
// Usage:
//
//	go run ./examples/bench                          # 500 × 1000, a few minutes on 2 cores
//	go run ./examples/bench -repos 2000 -records 1000 -json bench.json
//
// Flags:
//
//	-repos N          accounts generated and backfilled (default 500)
//	-records N        records per account (default 1000)
//	-hosts N          PDS hosts the accounts are spread over (default 4)
//	-live-commits N   commits in the firehose backlog (default 20000)
//	-lag-rate N       commits/s of the lag measurement; 0 skips it (default 200)
//	-lag-seconds N    duration of the lag measurement (default 5)
//	-subscribers N    subscribers of the fan-out replay (default 100)
//	-stream-events N  events each of the N subscribers reads (default 100000)
//	-verify mode      full, backfill or none for backfill and the main live run (default full)
//	-noverify-live    also run the live backlog with verification off (default true)
//	-spread-repos N   a second live backlog of -live-commits commits, spread over N new
//	                  accounts of 10 records (backfilled first), as on the network where
//	                  consecutive commits come from different repos; 0 skips it (default 2000)
//	-firehose-workers N  Config.FirehoseWorkers of the live runs (default 0: the indexer's default)
//	-limits           measure the raw limits (default true)
//	-server-repos N   accounts of the user's-path run (default 200; 0 skips it)
//	-server-records N records per account of the user's-path run (default 1000)
//	-server-args "..." extra flags for examples/cistern in that run
//	-server-only      run only the user's-path measurement
//	-server-profile-seconds N  CPU profile length of that run with BENCH_PROFILE (default 10)
//	-dir path         where stores are written (default a temporary directory, removed)
//	-json path        write the results as JSON
//	-scale sizes      the scale mode: grow one store to these record counts (1M,10M,50M)
//	-scale-window s   seconds of queries at each size (default 60)
//	-scale-query-rate n  getRecord/s and listRecords/s in a window (default 50 each)
//	-scale-live-rate n   live commits/s during the whole run (default 100)
//	-scale-live-repos n, -scale-live-records n  the live repos (default 200 of 100)
//	-scale-templates n   record sets the bulk repos cycle through (default 64)
//	-scale-deadline d    stop growing after d and measure the size reached
//	-scale-profile dir   CPU profile of the indexer per size (from 90% of it)
//	-scale-batch n       bulk repos added to the filter at a time (default 1M records' worth)
//	-store s          "" for bbolt (default); a postgres:// URL: a new schema on that
//	                  server; throwaway: a PostgreSQL (fsync on) started for the run
//	                  from the machine's binaries. On PostgreSQL the live run without
//	                  verification is skipped, and disk is the tables' size.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	role := flag.String("role", "", "internal: the child process role (backfill, live, stream)")
	var o options
	flag.IntVar(&o.Repos, "repos", 500, "accounts generated and backfilled")
	flag.IntVar(&o.Records, "records", 1000, "records per account")
	flag.IntVar(&o.Hosts, "hosts", 4, "PDS hosts the accounts are spread over")
	flag.IntVar(&o.LiveCommits, "live-commits", 20000, "commits in the firehose backlog")
	flag.Float64Var(&o.LagRate, "lag-rate", 200, "commits/s of the lag measurement; 0 skips it")
	flag.Float64Var(&o.LagSeconds, "lag-seconds", 5, "seconds of the lag measurement")
	flag.IntVar(&o.Subscribers, "subscribers", 100, "subscribers of the fan-out replay")
	flag.IntVar(&o.StreamEvents, "stream-events", 100000, "events each fan-out subscriber reads")
	flag.StringVar(&o.Verify, "verify", "full", "verification: full, backfill or none")
	flag.BoolVar(&o.NoVerifyLive, "noverify-live", true, "also run the live backlog with verification off")
	flag.IntVar(&o.SpreadRepos, "spread-repos", 2000, "accounts of 10 records a second live backlog of -live-commits commits is spread over (as on the network); 0 skips it")
	flag.BoolVar(&o.Limits, "limits", true, "measure the raw limits")
	flag.IntVar(&o.ServerRepos, "server-repos", 200, "accounts of the user's-path run (examples/cistern against examples/testnet); 0 skips it")
	flag.IntVar(&o.ServerRecords, "server-records", 1000, "records per account of the user's-path run")
	flag.StringVar(&o.ServerArgs, "server-args", "", "extra flags for examples/cistern in the user's-path run, space-separated")
	flag.BoolVar(&o.ServerOnly, "server-only", false, "run only the user's-path measurement")
	flag.IntVar(&o.ServerProfileSeconds, "server-profile-seconds", 10, "with BENCH_PROFILE set, seconds of CPU profile taken from the server")
	flag.StringVar(&o.Dir, "dir", "", "directory for the stores (default: a temporary one, removed)")
	flag.StringVar(&o.JSON, "json", "", "write the results as JSON to this file")
	flag.StringVar(&o.Store, "store", "", "the store: empty for bbolt, a postgres:// URL (a new schema on it), or throwaway (a durable PostgreSQL started for the run)")
	var c childArgs
	flag.StringVar(&c.DB, "db", "", "internal: store path")
	flag.StringVar(&c.PLC, "plc", "", "internal: PLC URL")
	flag.StringVar(&c.Relay, "relay", "", "internal: relay URL")
	flag.StringVar(&c.DIDFile, "dids", "", "internal: file of DIDs to track")
	flag.Int64Var(&c.Cursor, "cursor", 0, "internal: firehose cursor to start after")
	flag.Int64Var(&c.Until, "until", 0, "internal: firehose seq to reach")
	flag.IntVar(&c.FirehoseWorkers, "firehose-workers", 0, "Config.FirehoseWorkers of the live runs (0: the indexer's default)")
	flag.BoolVar(&c.Lag, "lag", false, "internal: measure lag after the backlog")
	var s scaleOptions
	s.register(flag.CommandLine)
	flag.StringVar(&c.ProfileTag, "profile-tag", "", "internal: added to the name of the child's CPU profile")
	flag.Parse()

	o.FirehoseWorkers = c.FirehoseWorkers
	var err error
	if *role == "scale" {
		c.Verify = o.Verify
		c.Records = o.Records
		err = runScaleChild(c, s)
	} else if s.Sizes != "" {
		err = runScale(o, s)
	} else if *role != "" {
		c.Verify, c.Subscribers, c.StreamEvents = o.Verify, o.Subscribers, o.StreamEvents
		err = runChild(*role, c)
	} else {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
