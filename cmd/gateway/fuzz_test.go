package main

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// secretAsKey matches the fuzzer moving the secret marker into a key
// position, where echoing it is right.
var (
	secretAsKey = regexp.MustCompile(`SECRETX[^\s:]*:(\s|$)`)
	// A key path in an error ("line 1: a[0].SECRETX: …") names a key.
	keyPath = regexp.MustCompile(`\S*SECRETX[^\s:]*:`)
)

// FuzzParseConfig: any input gives a config or ConfigErrors, never a panic,
// and no error message echoes a secret.
func FuzzParseConfig(f *testing.F) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(""))
	f.Add([]byte("webhook: {routes: [{path: /w, token: SECRETX}]}\nbogus: 1\n"))
	f.Add([]byte("buffer: {max_bytes: 12QB, max_age: 30}\nsinks: [{name: a, type: mqtt, url: 'ftp://x', password: SECRETX}]\n"))
	f.Add([]byte("gateway: {id: \"${NOPE}\"}\nlog: {level: loud}\nlog: {}\n"))
	f.Add([]byte("broker: {users: [{username: u, password: SECRETX, password_file: /nonexistent}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data, t.TempDir())
		if err == nil {
			if cfg == nil || len(cfg.Sinks) == 0 || cfg.Log.Level == "" {
				t.Fatalf("accepted config is incomplete: %+v", cfg)
			}
			return
		}
		var ce ConfigErrors
		if !errors.As(err, &ce) {
			t.Fatalf("error is not ConfigErrors: %T %v", err, err)
		}
		// Keys are named in errors by design; only a value may not be.
		msg := keyPath.ReplaceAllString(err.Error(), "")
		if strings.Contains(msg, "SECRETX") && !secretAsKey.Match(data) {
			t.Fatalf("error echoes a secret: %v", err)
		}
	})
}
