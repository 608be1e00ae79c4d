package query

import (
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// argError is an error about bad input: it names the value and wraps
// ErrInvalidArgument and the parser's error.
type argError struct {
	msg string
	err error
}

func (e *argError) Error() string {
	if e.err == nil {
		return "cistern: " + e.msg
	}
	return "cistern: " + e.msg + ": " + e.err.Error()
}

func (e *argError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrInvalidArgument}
	}
	return []error{ErrInvalidArgument, e.err}
}

// InvalidArg returns an error wrapping ErrInvalidArgument and cause (if
// not nil), with the message format names the value by.
func InvalidArg(cause error, format string, args ...any) error {
	return &argError{msg: fmt.Sprintf(format, args...), err: cause}
}

// ParseDID returns s as a normalized DID, or an error naming it.
func ParseDID(s string) (string, error) {
	d, err := syntax.ParseDID(s)
	if err != nil {
		return "", InvalidArg(err, "invalid DID %q", s)
	}
	return d.String(), nil
}

// ParseCollection returns s as an NSID, or an error naming it.
func ParseCollection(s string) (string, error) {
	n, err := syntax.ParseNSID(s)
	if err != nil {
		return "", InvalidArg(err, "invalid collection %q", s)
	}
	return n.String(), nil
}

// ParseRKey returns s as a record key, or an error naming it.
func ParseRKey(s string) (string, error) {
	k, err := syntax.ParseRecordKey(s)
	if err != nil {
		return "", InvalidArg(err, "invalid record key %q", s)
	}
	return k.String(), nil
}

// Limit checks the limit of a page of records: 1 to 100, 0 for the
// default 50.
func Limit(n int) (int, error) {
	if n == 0 {
		return 50, nil
	}
	if n < 1 || n > 100 {
		return 0, InvalidArg(nil, "limit %d is outside 1..100", n)
	}
	return n, nil
}
