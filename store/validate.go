package store

import (
	"fmt"
	"strings"
)

// Validate reports what makes r unstorable: an empty DID, collection, rkey
// or CID, or a collection containing '/' (a repo path is collection "/"
// rkey, so the separator cannot be part of the collection). Every Store's
// PutRecord refuses such a record with this error and writes nothing; an
// implementation may refuse more (boltstore bounds the field lengths).
func (r *Record) Validate() error {
	switch {
	case r.DID == "":
		return fmt.Errorf("store: record has an empty DID")
	case r.Collection == "":
		return fmt.Errorf("store: record %s has an empty collection", r.DID)
	case strings.IndexByte(r.Collection, '/') >= 0:
		return fmt.Errorf("store: record %s: collection %q contains '/'", r.DID, r.Collection)
	case r.RKey == "":
		return fmt.Errorf("store: record %s/%s has an empty rkey", r.DID, r.Collection)
	case len(r.CID) == 0:
		return fmt.Errorf("store: record %s/%s/%s has an empty CID", r.DID, r.Collection, r.RKey)
	}
	return nil
}

// ValidateLinks reports what makes a call PutLinks(did, collection, rkey,
// seq, links) malformed: an empty DID, collection or rkey, position 0, or
// a link with an empty Target or Path. It checks more than Tx.PutLinks
// requires every Store to refuse; pgstore's PutLinks refuses what it
// reports and writes nothing, and other implementations may do the same.
func ValidateLinks(did, collection, rkey string, seq uint64, links []Link) error {
	switch {
	case did == "":
		return fmt.Errorf("store: links of a record with an empty DID")
	case collection == "":
		return fmt.Errorf("store: links of a record of %s with an empty collection", did)
	case rkey == "":
		return fmt.Errorf("store: links of a record %s/%s with an empty rkey", did, collection)
	case seq == 0:
		return fmt.Errorf("store: links of %s/%s/%s at position 0", did, collection, rkey)
	}
	for i, l := range links {
		if l.Target == "" {
			return fmt.Errorf("store: link %d of %s/%s/%s (path %q) has an empty target", i, did, collection, rkey, l.Path)
		}
		if l.Path == "" {
			return fmt.Errorf("store: link %d of %s/%s/%s (to %s) has an empty path", i, did, collection, rkey, l.Target)
		}
	}
	return nil
}
