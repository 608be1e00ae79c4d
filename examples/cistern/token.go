package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
)

// adminToken is the management token the server runs with.
type adminToken struct {
	value     string
	file      string // where it was read or written; "" when given by -admin-token
	generated bool   // written on this start
}

// tokenFile returns where the generated token lives: -admin-token-file, or
// beside the store (dbPath) as <db>.admin-token.
func (c *config) tokenFile(dbPath string) string {
	if c.AdminTokenFile != "" {
		return c.AdminTokenFile
	}
	return dbPath + ".admin-token"
}

// loadAdminToken returns the token of -admin-token, or reads the token file,
// creating it with a new random token (mode 0600) when it does not exist. A
// token file that other users can read is refused.
func loadAdminToken(c *config, dbPath string) (*adminToken, error) {
	if c.AdminToken != "" {
		return &adminToken{value: c.AdminToken}, nil
	}
	path := c.tokenFile(dbPath)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createTokenFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("admin token file %s can be read by other users (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("admin token file %s is empty; delete it to have a new token generated", path)
	}
	return &adminToken{value: tok, file: path}, nil
}

func createTokenFile(path string) (*adminToken, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	tok := hex.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	return &adminToken{value: tok, file: path, generated: true}, nil
}

// describe says where the token is, for the startup output.
func (t *adminToken) describe() string {
	if t.file == "" {
		return "management API needs the -admin-token as Authorization: Bearer <token>"
	}
	verb := "in"
	if t.generated {
		verb = "generated in"
	}
	return fmt.Sprintf("management token %s %s (mode 0600); send it as Authorization: Bearer <token>, e.g. curl -H \"Authorization: Bearer $(cat %s)\"",
		verb, t.file, t.file)
}

// loopbackListen reports whether a listen address only accepts connections
// from this machine: a loopback IP or localhost. An empty host (":2470")
// listens on every interface.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
