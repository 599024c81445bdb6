package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeFile checks docker-compose.yml without a Docker engine (there
// is none here): the services are there, and every command it gives the
// cutoff image is a real subcommand whose flags parse.
func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
			Build   *struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
			CapAdd  []string       `yaml:"cap_add"`
			CapDrop []string       `yaml:"cap_drop"`
			Env     map[string]any `yaml:"environment"`
			Depends map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	for _, name := range []string{"postgres", "migrate", "correlate", "probe"} {
		if _, ok := doc.Services[name]; !ok {
			t.Fatalf("service %q missing", name)
		}
	}
	if img := doc.Services["postgres"].Image; !strings.HasPrefix(img, "postgres:") {
		t.Fatalf("postgres image %q", img)
	}
	vars := regexp.MustCompile(`\$\{([A-Z_]+):-([^}]*)\}`)
	a := &app{stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.DiscardHandler)}
	for name, svc := range doc.Services {
		if name == "postgres" {
			continue
		}
		if svc.Image != "cutoff:latest" {
			t.Errorf("%s: image %q, want the cutoff image", name, svc.Image)
		}
		if _, ok := svc.Env["DATABASE_URL"]; !ok {
			t.Errorf("%s: no DATABASE_URL", name)
		}
		args := make([]string, len(svc.Command))
		for i, arg := range svc.Command {
			args[i] = vars.ReplaceAllString(arg, "$2")
		}
		cmd, rest := root(), args
		for cmd.setup == nil {
			if len(rest) == 0 || cmd.find(rest[0]) == nil {
				t.Fatalf("%s: %v is not a cutoff command", name, svc.Command)
			}
			cmd, rest = cmd.find(rest[0]), rest[1:]
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cmd.setup(a, fs)
		if err := fs.Parse(rest); err != nil {
			t.Errorf("%s: %v: %v", name, svc.Command, err)
		}
	}
	probe := doc.Services["probe"]
	if len(probe.CapAdd) != 1 || probe.CapAdd[0] != "NET_RAW" || len(probe.CapDrop) != 1 || probe.CapDrop[0] != "ALL" {
		t.Errorf("probe: cap_add %v, cap_drop %v; want NET_RAW only", probe.CapAdd, probe.CapDrop)
	}
	if dep := doc.Services["correlate"].Depends["migrate"].Condition; dep != "service_completed_successfully" {
		t.Errorf("correlate waits for migrate with %q", dep)
	}
	build := doc.Services["migrate"].Build
	if build == nil {
		t.Fatal("migrate: no build section")
	}
	df, err := os.ReadFile("../../" + build.Dockerfile)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, want := range []string{"AS build", "CGO_ENABLED=0", "./cmd/cutoff", "COPY --from=build"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(string(df), "\nFROM ") < 2 {
		t.Error("Dockerfile is not multi-stage")
	}
}
