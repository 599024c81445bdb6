package main

// commands lists cutoff's subcommands in the order help shows them.
func commands() []*command {
	return []*command{
		migrateCmd(),
		targetsCmd(),
		labCmd(),
		probeCmd(),
		correlateCmd(),
		reportCmd(),
		demoCmd(),
		vantageCmd(),
		benchCmd(),
	}
}
