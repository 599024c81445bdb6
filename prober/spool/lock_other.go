//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import (
	"errors"
	"os"
)

func lockFile(*os.File) error {
	return errors.New("spool: directory locking is not supported on this platform")
}
