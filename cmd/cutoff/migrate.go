package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/cutoffnet/cutoff/store"
)

func migrateCmd() *command {
	return &command{
		name:    "migrate",
		summary: "create or update the database schema",
		help: `Applies the schema migrations embedded in this binary that the database
has not seen yet, each in its own transaction. Running it again changes
nothing; concurrent runs are safe. The connecting role needs CREATEROLE
the first time (it creates the cutoff_prober and cutoff_reader roles).`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				applied, err := st.Migrate(ctx)
				for _, m := range applied {
					fmt.Fprintf(a.stdout, "applied %s\n", m.Name)
				}
				if err != nil {
					return err
				}
				cur, _, err := st.SchemaVersion(ctx)
				if err != nil {
					return err
				}
				if len(applied) == 0 {
					fmt.Fprintf(a.stdout, "nothing to do: schema is at version %d\n", cur)
				} else {
					fmt.Fprintf(a.stdout, "schema is at version %d\n", cur)
				}
				return nil
			}
		},
	}
}
