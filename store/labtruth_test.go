package store_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestLabTruth(t *testing.T) {
	st := pgtest.New(t)
	ctx := context.Background()
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	story := time.Date(2014, 12, 22, 16, 15, 0, 0, time.UTC)
	cut := store.LabTruth{RunID: "r1", Seq: 1, Scenario: "dec2014", Country: "XL", Target: "border", Fault: "cut",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24"), netip.MustParsePrefix("198.19.1.0/24")},
		Line:     7, StartedAt: start, StoryStart: &story}
	vp := store.LabTruth{RunID: "r1", Seq: 2, Scenario: "dec2014", Target: "vantage:vp1", Fault: "cut", StartedAt: start}
	for _, tt := range []store.LabTruth{cut, vp} {
		if err := st.RecordLabTruth(ctx, tt); err != nil {
			t.Fatal(err)
		}
	}
	// Ending a fault updates its row.
	end, storyEnd := start.Add(90*time.Second), story.Add(9*time.Hour+31*time.Minute)
	cut.EndedAt, cut.StoryEnd = &end, &storyEnd
	if err := st.RecordLabTruth(ctx, cut); err != nil {
		t.Fatal(err)
	}
	got, err := st.LabTruthOf(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d rows, want 2", len(got))
	}
	g := got[0]
	if g.Target != "border" || g.EndedAt == nil || !g.EndedAt.Equal(end) || !g.StoryStart.Equal(story) ||
		!g.StoryEnd.Equal(storyEnd) || !slices.Equal(g.Prefixes, cut.Prefixes) || g.Line != 7 {
		t.Errorf("row 1 = %+v, want %+v", g, cut)
	}
	if got[1].EndedAt != nil || len(got[1].Prefixes) != 0 {
		t.Errorf("row 2 = %+v, want open with no prefixes", got[1])
	}
	// The generated range answers "what was down at T".
	var n int
	err = st.Pool().QueryRow(ctx, `SELECT count(*) FROM lab_truth WHERE during @> $1::timestamptz`, start.Add(time.Hour)).Scan(&n)
	if err != nil || n != 1 {
		t.Errorf("faults active an hour in: %d (%v), want 1 (the open vantage cut)", n, err)
	}
	// Readers may read it.
	var ok bool
	if err := st.Pool().QueryRow(ctx, `SELECT has_table_privilege('cutoff_reader', 'lab_truth', 'SELECT')`).Scan(&ok); err != nil || !ok {
		t.Errorf("cutoff_reader SELECT on lab_truth = %v (%v), want true", ok, err)
	}
	// A fault that is not one of the known kinds is refused.
	bad := vp
	bad.Seq, bad.Fault = 3, "meteor"
	if err := st.RecordLabTruth(ctx, bad); err == nil {
		t.Error("recorded fault 'meteor'")
	}
}
