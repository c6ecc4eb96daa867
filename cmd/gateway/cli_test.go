package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Every level answers -h/--help with its commands and flags, and --version
// works as operators type it.
func TestCommandLineHelpAndVersion(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"check-config", "queue", "version", "-config PATH"}},
		{[]string{"--help"}, []string{"check-config", "queue"}},
		{[]string{"help"}, []string{"check-config", "queue"}},
		{[]string{"--version"}, []string{"wittra-gateway ", "go1."}},
		{[]string{"version"}, []string{"wittra-gateway "}},
		{[]string{"queue", "--help"}, []string{"stats", "peek", "export", "purge"}},
		{[]string{"queue", "-h"}, []string{"stats", "purge -yes"}},
		{[]string{"run", "-h"}, []string{"usage: wittra-gateway run", "-config"}},
		{[]string{"check-config", "--help"}, []string{"usage: wittra-gateway check-config", "-config"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := (&Main{Stdout: &out, Stderr: &errOut}).Run(context.Background(), c.args)
			if code := exitCode(err); code != exitOK {
				t.Fatalf("exit %d (%v), want 0; stderr:\n%s", code, err, errOut.String())
			}
			text := out.String() + errOut.String()
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
		})
	}
}

func TestVersionNamesTheCommitOnce(t *testing.T) {
	defer func(v, c string) { Version, Commit = v, c }(Version, Commit)
	Version, Commit = "v1.2.0-3-gabc1234", "abc1234"
	if got := versionString(); strings.Count(got, "abc1234") != 1 {
		t.Fatalf("version %q names the commit more than once", got)
	}
	Version = "v1.2.0"
	if got := versionString(); !strings.Contains(got, "commit abc1234") {
		t.Fatalf("version %q does not name the commit", got)
	}
}
