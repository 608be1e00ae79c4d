package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car"
	bolt "go.etcd.io/bbolt"
)

// LimitsResult are the raw rates of the parts cistern is built on, measured
// on one goroutine.
type LimitsResult struct {
	BoltSeqPutsPerSec     float64 `json:"boltSequentialPutsPerSec"`
	BoltRandPutsPerSec    float64 `json:"boltRandomPutsPerSec"`
	CARBytes              int     `json:"carBytes"`
	CARBlocksPerSec       float64 `json:"carBlocksPerSec"`
	CARMBPerSec           float64 `json:"carMBPerSec"`
	LoadRepoRecordsPerSec float64 `json:"loadRepoRecordsPerSec"`
	VerifiesPerSec        float64 `json:"k256VerifiesPerSec"`
}

// measureLimits measures bbolt, CAR parsing and K-256 verification. car is
// one generated repo of records records.
func measureLimits(dir string, carData []byte, records int, key atcrypto.PrivateKey) (*LimitsResult, error) {
	res := &LimitsResult{CARBytes: len(carData)}
	var err error
	if res.BoltSeqPutsPerSec, err = boltPuts(dir, false); err != nil {
		return nil, err
	}
	if res.BoltRandPutsPerSec, err = boltPuts(dir, true); err != nil {
		return nil, err
	}

	// go-car: read every block (CIDs checked by the reader).
	blocks, d := 0, time.Duration(0)
	var n int
	for t := time.Now(); time.Since(t) < time.Second; n++ {
		t0 := time.Now()
		cr, err := car.NewCarReader(bufio.NewReader(bytes.NewReader(carData)))
		if err != nil {
			return nil, err
		}
		for {
			_, err := cr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
			blocks++
		}
		d += time.Since(t0)
	}
	res.CARBlocksPerSec = float64(blocks) / d.Seconds()
	res.CARMBPerSec = float64(n*len(carData)) / d.Seconds() / 1e6

	// indigo's LoadRepoFromCAR and a walk of every record.
	var total time.Duration
	var walked int
	for t := time.Now(); time.Since(t) < time.Second; {
		t0 := time.Now()
		_, r, err := repo.LoadRepoFromCAR(context.Background(), bytes.NewReader(carData))
		if err != nil {
			return nil, err
		}
		err = r.MST.Walk(func([]byte, cid.Cid) error { walked++; return nil })
		if err != nil {
			return nil, err
		}
		total += time.Since(t0)
	}
	res.LoadRepoRecordsPerSec = float64(walked) / total.Seconds()

	// K-256 verification of one signature, on this goroutine.
	msg := make([]byte, 200)
	rand.Read(msg)
	sig, err := key.HashAndSign(msg)
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	var v int
	t := time.Now()
	for time.Since(t) < time.Second {
		for range 50 {
			if err := pub.HashAndVerify(msg, sig); err != nil {
				return nil, err
			}
			v++
		}
	}
	res.VerifiesPerSec = float64(v) / time.Since(t).Seconds()
	return res, nil
}

// boltPuts writes 100 fsynced transactions of 1000 puts (40-byte keys,
// 300-byte values) into a fresh bbolt file and returns puts per second.
func boltPuts(dir string, random bool) (float64, error) {
	path := filepath.Join(dir, "limits.bolt")
	defer os.Remove(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	val := make([]byte, 300)
	key := make([]byte, 40)
	var seq uint64
	const txs, per = 100, 1000
	t := time.Now()
	for range txs {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for range per {
				seq++
				if random {
					rand.Read(key)
				} else {
					binary.BigEndian.PutUint64(key[32:], seq)
				}
				if err := b.Put(key, val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return float64(txs*per) / time.Since(t).Seconds(), nil
}
