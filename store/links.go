package store

// Link is one reference a record holds to another record or to an account,
// as the backlink index keeps it.
type Link struct {
	// Target is what the record points at: an at-uri
	// ("at://did:plc:…/app.bsky.feed.post/3k…") or a DID.
	Target string
	// Path is where in the record's value the link sits, dot-separated
	// from the top of the value as constellation names it ("subject.uri",
	// "reply.parent.uri"); "[]" marks an array element, "[t]" one that is
	// a map of $type t ("facets[].features[app.bsky.richtext.facet#mention].did").
	// Stores treat it as an opaque string.
	Path string
}

// Backlink is one record that links to a target.
type Backlink struct {
	DID        string
	Collection string
	RKey       string
	Path       string
	// Seq is the linking record's Seq (its write position, see
	// Record.Seq): newer records have higher positions. It is the cursor
	// of ScanBacklinks.
	Seq uint64
}

// BacklinkScan selects the records linking to one target from one source
// (a collection and a path in its records) for ScanBacklinks.
type BacklinkScan struct {
	Target     string
	Collection string
	Path       string
	// After is the position to start after (0 for the newest or, with
	// Reverse, the oldest).
	After uint64
	// Reverse visits oldest first.
	Reverse bool
}

// BacklinkCount counts the links to one target from one source.
type BacklinkCount struct {
	// Records counts the linking records (a record holding the same link
	// twice at one path counts once).
	Records int64
	// DIDs counts the distinct accounts among them.
	DIDs int64
}
