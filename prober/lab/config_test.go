package lab_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cutoffnet/cutoff/prober/lab"
)

// TestREADMEConfig: the lab file shown in the README is the default lab,
// so what the README says about the defaults is true.
func TestREADMEConfig(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- lab-config -->\n```yaml\n")
	if !ok {
		t.Fatal("README has no <!-- lab-config --> yaml block")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README's lab-config block is not closed")
	}
	got, err := lab.ParseConfig([]byte(block))
	if err != nil {
		t.Fatalf("README's lab file: %v", err)
	}
	// Decode onto an empty config too: every field must be spelled out.
	var bare lab.Config
	if err := yaml.Unmarshal([]byte(block), &bare); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, lab.Default()) || !reflect.DeepEqual(bare, lab.Default()) {
		t.Errorf("README's lab file differs from lab.Default():\n got %+v\nbare %+v\nwant %+v", got, bare, lab.Default())
	}
}
