package jsonhttp

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAnswers(t *testing.T) {
	long := strings.Repeat("é", MaxMessageBytes) // two bytes each: cut inside one
	for _, tc := range []struct {
		name       string
		write      func(w http.ResponseWriter)
		status     int
		want       string
		wantPrefix bool
	}{
		{"value, HTML not escaped", func(w http.ResponseWriter) { Write(w, 200, map[string]string{"t": "<a>&"}) },
			200, "{\"t\":\"<a>&\"}\n", false},
		{"unencodable value", func(w http.ResponseWriter) { Write(w, 200, func() {}) },
			500, `{"error":"InternalServerError","message":"encode answer: `, true},
		{"error, HTML not escaped", func(w http.ResponseWriter) { Error(w, 400, "InvalidRequest", "bad <rkey> & more") },
			400, "{\"error\":\"InvalidRequest\",\"message\":\"bad <rkey> & more\"}\n", false},
		{"error without message", func(w http.ResponseWriter) { Error(w, 404, "RecordNotFound", "") },
			404, "{\"error\":\"RecordNotFound\"}\n", false},
		{"long message cut at a character", func(w http.ResponseWriter) { Error(w, 400, "InvalidRequest", long) },
			400, `{"error":"InvalidRequest","message":"` + long[:MaxMessageBytes] + "… (message cut at 1024 of 2048 bytes)\"}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.write(rec)
			got := rec.Body.String()
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.wantPrefix && !strings.HasPrefix(got, tc.want) || !tc.wantPrefix && got != tc.want {
				t.Errorf("body %q, want %q", got, tc.want)
			}
		})
	}
}
