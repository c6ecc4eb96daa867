package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"wittra-gateway/internal/testutil"
)

// `devices` while a gateway holds the queue file: it says why it cannot
// answer when the admin listener is off or needs a login, instead of
// failing on the lock or printing nothing.
func TestDevicesCommandWhileTheGatewayRuns(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("on-site pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ admin, want string }{
		"admin off":   {`admin: {listen: ""}`, "admin listener is off"},
		"admin login": {fmt.Sprintf("admin: {listen: %s, users: [{username: tech, password: %s}]}", testutil.FreeAddrs(t, 1)[0], yamlString(string(hash))), "needs a login (admin.users)"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			startTestGateway(t, dir, map[string]string{"admin": c.admin})
			err := (&DevicesCommand{Stdout: io.Discard, Stderr: io.Discard}).Run(context.Background(), []string{"-config", filepath.Join(dir, "config.yaml")})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("devices = %v, want an error saying %q", err, c.want)
			}
		})
	}
}
