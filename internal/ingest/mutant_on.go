//go:build cistern_mutant_dropdeletes

package ingest

// mutantDropDeletes makes this build drop live deletes: a deliberately
// broken cistern for scripts/mutation.sh. Never use this tag otherwise.
const mutantDropDeletes = true
