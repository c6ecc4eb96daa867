// Command mkdeb builds the wittra-gateway .deb packages in pure Go: it
// cross-compiles the gateway (CGO off) and packs it with nfpm, so a build
// needs the Go toolchain and the module proxy, nothing else.
//
//	go -C packaging run ./mkdeb [-arch amd64,arm64,armhf] [-version V] [-out DIR]
//
// It runs from the packaging/ module (its own go.mod keeps nfpm's many
// dependencies out of the gateway's); paths are relative to the repository
// root, found as the parent of the working directory.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

const name = "wittra-gateway"

// target is one Debian architecture and the Go build that runs on it.
type target struct {
	debArch, goarch, goarm string
}

// armhf is built for ARMv6 (GOARM=6, hardware float): Raspberry Pi OS's
// armhf runs on the ARMv6 Pi Zero and Pi 1 too, and ARMv7 runs ARMv6 code.
var targets = map[string]target{
	"amd64": {"amd64", "amd64", ""},
	"arm64": {"arm64", "arm64", ""},
	"armhf": {"armhf", "arm", "6"},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}

func run() error {
	archs := flag.String("arch", "amd64,arm64,armhf", "Debian architectures, comma separated")
	version := flag.String("version", "", "package version (default: from git)")
	out := flag.String("out", "dist", "output directory, relative to the repository root")
	flag.StringVar(&maintainer, "maintainer", maintainer, "the package's Maintainer field")
	printVersion := flag.Bool("print-version", false, "print the version from git and exit")
	flag.Parse()

	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root := filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(root, "cmd", "gateway")); err != nil {
		return fmt.Errorf("run from the packaging/ directory of the repository (go -C packaging run ./mkdeb): %w", err)
	}
	v := *version
	if v == "" {
		if v, err = gitVersion(root); err != nil {
			return err
		}
	}
	if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*$`).MatchString(v) {
		return fmt.Errorf("version %q is not a Debian version", v)
	}
	if *printVersion {
		fmt.Println(v)
		return nil
	}
	commit, _ := git(root, "rev-parse", "--short", "HEAD")
	outDir := *out
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(root, outDir)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "mkdeb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if err := stageConfig(root, stage); err != nil {
		return err
	}
	if err := stageChangelog(root, stage, v, commit); err != nil {
		return err
	}
	for _, a := range strings.Split(*archs, ",") {
		t, ok := targets[strings.TrimSpace(a)]
		if !ok {
			return fmt.Errorf("unknown architecture %q (amd64, arm64, armhf)", a)
		}
		bin := filepath.Join(stage, "wittra-gateway-"+t.debArch)
		if err := buildBinary(root, t, v, commit, bin); err != nil {
			return err
		}
		path := filepath.Join(outDir, fmt.Sprintf("%s_%s-%s_%s.deb", name, v, debRevision, t.debArch))
		if err := pack(root, stage, bin, t, v, path); err != nil {
			return fmt.Errorf("%s: %w", t.debArch, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		fmt.Printf("%s\t%d bytes\n", path, fi.Size())
	}
	return nil
}

func git(root string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// gitVersion makes a Debian version that grows with every commit: from the
// last vX.Y.Z tag (X.Y.Z, or X.Y.Z+gitN.HASH N commits later), else from
// the commit time (0.0.0+gitYYYYMMDDhhmmss.HASH). Uncommitted changes add
// ".dirty".
func gitVersion(root string) (string, error) {
	var v string
	if d, err := git(root, "describe", "--tags", "--long", "--match", "v[0-9]*"); err == nil {
		m := regexp.MustCompile(`^v([0-9][0-9A-Za-z.~+]*)-([0-9]+)-g([0-9a-f]+)$`).FindStringSubmatch(d)
		if m == nil {
			return "", fmt.Errorf("git describe %q: not vX.Y.Z-N-gHASH", d)
		}
		v = m[1]
		if m[2] != "0" {
			v += "+git" + m[2] + "." + m[3]
		}
	} else {
		ct, err := git(root, "log", "-1", "--format=%ct %h")
		if err != nil {
			return "", err
		}
		var sec int64
		var hash string
		if _, err := fmt.Sscan(ct, &sec, &hash); err != nil {
			return "", fmt.Errorf("git log: %q: %w", ct, err)
		}
		v = "0.0.0+git" + time.Unix(sec, 0).UTC().Format("20060102150405") + "." + hash
	}
	if st, err := git(root, "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		v += ".dirty"
	}
	return v, nil
}

// goCommand is the go command of PATH, else of $GOROOT.
func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

func buildBinary(root string, t target, version, commit, out string) error {
	cmd := exec.Command(goCommand(), "build", "-trimpath",
		"-ldflags", fmt.Sprintf("-s -w -X main.Version=%s -X main.Commit=%s", version, commit),
		"-o", out, "./cmd/gateway")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.goarch, "GOARM="+t.goarm)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w", t.debArch, err)
	}
	return nil
}

// stageConfig writes the packaged config.yaml: the example config with the
// queue in the state directory and journald log priorities.
func stageConfig(root, stage string) error {
	b, err := os.ReadFile(filepath.Join(root, "config.example.yaml"))
	if err != nil {
		return err
	}
	s := string(b)
	for _, r := range []struct{ re, repl string }{
		{`(?m)^(\s+path:\s*)\./data/queue\.db(\s)`, "${1}/var/lib/wittra-gateway/queue.db${2}"},
		{`(?m)^(\s+format:\s*)json(\s)`, "${1}journald${2}"},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(s) {
			return fmt.Errorf("config.example.yaml: no line matches %s: update packaging/mkdeb", r.re)
		}
		s = re.ReplaceAllString(s, r.repl)
	}
	head := "# Installed by the wittra-gateway package: edit freely, upgrades keep this file.\n" +
		"# Check it with: wittra-gateway check-config -config /etc/wittra-gateway/config.yaml\n" +
		"# Secrets go in /etc/wittra-gateway/env (referenced here as ${NAME}).\n\n"
	return os.WriteFile(filepath.Join(stage, "config.yaml"), []byte(head+s), 0o644)
}

// stageChangelog writes the one-entry changelog nfpm turns into
// changelog.Debian.gz (Debian wants one in every package).
func stageChangelog(root, stage, version, commit string) error {
	date := time.Now().UTC()
	if ct, err := git(root, "log", "-1", "--format=%cI"); err == nil {
		if t, err := time.Parse(time.RFC3339, ct); err == nil {
			date = t.UTC()
		}
	}
	y := fmt.Sprintf("- semver: %q\n  date: %s\n  packager: %q\n  deb: {urgency: medium, distributions: [stable]}\n  changes:\n    - commit: %q\n      note: %q\n",
		version+"-"+debRevision, date.Format(time.RFC3339), maintainer, commit, "Built from commit "+commit+"; see README.md.")
	return os.WriteFile(filepath.Join(stage, "changelog.yml"), []byte(y), 0o644)
}

// maintainer names who answers for the package (-maintainer overrides it).
var maintainer = "Wittra gateway maintainers <wittra-gateway@users.noreply.github.com>"

// debRevision is the Debian revision: the packaging of one upstream version.
const debRevision = "1"

func readScript(root, file string) string { return filepath.Join(root, "packaging", "debian", file) }

func pack(root, stage, bin string, t target, version, path string) error {
	doc := "/usr/share/doc/" + name
	mode := func(m os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: m}
	}
	info := &nfpm.Info{
		Name:          name,
		Arch:          t.debArch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Release:       debRevision,
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description: "Wittra webhook gateway: durable queue to MQTT and Cumulocity\n" +
			"Receives Wittra sensor webhooks, keeps every accepted message in a\n" +
			"disk-backed queue and delivers it to an MQTT broker (external or\n" +
			"embedded) and to Cumulocity. Runs as a systemd service configured\n" +
			"by /etc/wittra-gateway/config.yaml.",
		License:  "Apache-2.0",
		Homepage: "https://github.com/wittra-gateway/wittra-gateway",
		Overridables: nfpm.Overridables{
			Depends: []string{"adduser"},
			Contents: files.Contents{
				{Source: bin, Destination: "/usr/bin/" + name, FileInfo: mode(0o755)},
				{Source: filepath.Join(root, "systemd", name+".service"), Destination: "/lib/systemd/system/" + name + ".service", FileInfo: mode(0o644)},
				{Destination: "/etc/" + name, Type: files.TypeDir, FileInfo: mode(0o755)},
				// Conffiles: dpkg never overwrites an operator's edits.
				// postinst makes them 0640 root:wittra-gateway (the group
				// does not exist when dpkg unpacks them).
				{Source: filepath.Join(stage, "config.yaml"), Destination: "/etc/" + name + "/config.yaml", Type: files.TypeConfigNoReplace, FileInfo: mode(0o640)},
				{Source: readScript(root, "env"), Destination: "/etc/" + name + "/env", Type: files.TypeConfigNoReplace, FileInfo: mode(0o640)},
				{Source: filepath.Join(root, "README.md"), Destination: doc + "/README.md", FileInfo: mode(0o644)},
				{Source: filepath.Join(root, "config.example.yaml"), Destination: doc + "/examples/config.example.yaml", FileInfo: mode(0o644)},
				{Source: readScript(root, "copyright"), Destination: doc + "/copyright", FileInfo: mode(0o644)},
				{Source: readScript(root, "lintian-overrides"), Destination: "/usr/share/lintian/overrides/" + name, FileInfo: mode(0o644)},
			},
			Scripts: nfpm.Scripts{
				PostInstall: readScript(root, "postinst"),
				PreRemove:   readScript(root, "prerm"),
				PostRemove:  readScript(root, "postrm"),
			},
		},
		Changelog: filepath.Join(stage, "changelog.yml"),
	}
	info = nfpm.WithDefaults(info)
	if err := info.Validate(); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return errors.Join(f.Close())
}
