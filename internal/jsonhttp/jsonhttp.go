// Package jsonhttp writes cistern's JSON answers over HTTP: a value, or an
// error in cistern's one error form, {"error":"Name","message":"…"}.
//
// Every HTTP surface of cistern answers through it (httpapi's XRPC,
// management and stream endpoints, tapcompat's tap endpoints), so that they
// encode alike: like a PDS, without escaping <, > and & in strings (the
// answer is JSON, never HTML), with a trailing newline, and with an error's
// message cut at MaxMessageBytes so that a huge parameter is never echoed
// back whole.
package jsonhttp

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Write answers v as JSON with status. A v that cannot be encoded is
// answered as a 500 InternalServerError instead.
func Write(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode adds the newline
		Error(w, http.StatusInternalServerError, "InternalServerError", "encode answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// MaxMessageBytes bounds the message of an error answer; a longer one is
// cut (at a character boundary) and says so.
const MaxMessageBytes = 1024

// errorBody is the JSON of an error answer (httpapi.Error has the same).
type errorBody struct {
	Name    string `json:"error"`
	Message string `json:"message,omitempty"`
}

// Error answers an error: status, and {"error":name,"message":message}.
func Error(w http.ResponseWriter, status int, name, message string) {
	if len(message) > MaxMessageBytes {
		cut := MaxMessageBytes
		for cut > 0 && !utf8.RuneStart(message[cut]) {
			cut--
		}
		message = message[:cut] + "… (message cut at " + strconv.Itoa(cut) + " of " + strconv.Itoa(len(message)) + " bytes)"
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(errorBody{Name: name, Message: message}) // two strings: cannot fail
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
