package spool_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cutoffnet/cutoff/prober/spool"
)

// The agent's shape: the probing side appends each encoded batch, the
// writer loop replays into the database and acknowledges what committed.
// A failed insert leaves the batch pending; the next Replay starts with it.
func Example() {
	dir, _ := os.MkdirTemp("", "spool-example")
	defer os.RemoveAll(dir)
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sp.Close()

	for _, batch := range []string{"batch 1", "batch 2", "batch 3"} {
		if _, err := sp.Append([]byte(batch)); err != nil {
			log.Fatal(err) // errors.Is(err, spool.ErrFull): count and log the dropped batch
		}
	}

	dbUp := false
	insert := func(r spool.Record) error { // stands in for store.Ingest
		if !dbUp && r.Seq == 2 {
			return errors.New("database unreachable")
		}
		fmt.Printf("inserted %s\n", r.Data)
		return nil
	}
	ctx := context.Background()
	if err := sp.Replay(ctx, insert); err != nil {
		fmt.Println("replay stopped:", err, "- pending:", sp.Pending())
	}
	dbUp = true
	if err := sp.Replay(ctx, insert); err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending:", sp.Pending())
	// Output:
	// inserted batch 1
	// replay stopped: database unreachable - pending: 2
	// inserted batch 2
	// inserted batch 3
	// pending: 0
}
