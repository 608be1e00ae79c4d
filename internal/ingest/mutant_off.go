//go:build !cistern_mutant_dropdeletes

package ingest

// mutantDropDeletes is false in every real build. scripts/mutation.sh
// builds with the tag cistern_mutant_dropdeletes, which makes live deletes
// be dropped, to show that the end-to-end suite catches a broken indexer.
const mutantDropDeletes = false
