package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The serve daemon holds the lab's listeners while a lab brought up from
// the command line is up. `cutoff lab up` starts it detached; it writes
// its pid file once every listener is open, and `cutoff lab down` stops it
// by that pid after checking /proc/PID/cmdline, so a recycled pid is never
// signalled.

const (
	pidFile = "serve.pid"
	logFile = "serve.log"
)

// ServeStatus describes the serve daemon of a lab.
type ServeStatus struct {
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running"`
	Log     string `json:"log,omitempty"`
}

// ServeState reads the daemon's pid file in the lab's state directory
// and checks the process.
func ServeState(dir string) ServeStatus {
	s := ServeStatus{Log: filepath.Join(dir, logFile)}
	pid, err := readPID(dir)
	if err != nil {
		return s
	}
	s.PID = pid
	s.Running = isServe(pid, filepath.Base(dir))
	return s
}

func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// isServe reports whether pid is a live `… lab serve … --prefix PREFIX`.
func isServe(pid int, prefix string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	serve, pfx := false, false
	for i, a := range args {
		if a == "serve" && i > 0 && args[i-1] == "lab" {
			serve = true
		}
		if (a == "--prefix" || a == "-prefix") && i+1 < len(args) && args[i+1] == prefix ||
			a == "--prefix="+prefix || a == "-prefix="+prefix {
			pfx = true
		}
	}
	return serve && pfx
}

// WritePID records the calling process as the lab's serve daemon.
func WritePID(dir string) error {
	return writeFileAtomic(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"))
}

// RemovePID removes the pid file if it names the calling process.
func RemovePID(dir string) {
	if pid, err := readPID(dir); err == nil && pid == os.Getpid() {
		os.Remove(filepath.Join(dir, pidFile))
	}
}

// StartServe starts cmd (which must run `… lab serve --prefix P …`)
// detached in its own session with its output appended to the lab's log,
// and waits until it has written its pid file, i.e. until every listener
// is open. If a daemon already runs for the lab, it starts nothing.
func StartServe(ctx context.Context, dir string, cmd *exec.Cmd) (pid int, err error) {
	if st := ServeState(dir); st.Running {
		return st.PID, nil
	}
	logf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("serve log: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr, cmd.Stdin = logf, logf, nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start serve daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return 0, fmt.Errorf("serve daemon exited (%v); see %s", err, filepath.Join(dir, logFile))
		case <-ctx.Done():
			cmd.Process.Kill()
			return 0, ctx.Err()
		case <-deadline:
			cmd.Process.Kill()
			return 0, fmt.Errorf("serve daemon did not start within 15s; see %s", filepath.Join(dir, logFile))
		case <-tick.C:
			if p, err := readPID(dir); err == nil && p == cmd.Process.Pid {
				return p, nil
			}
		}
	}
}

// StopServe stops the lab's serve daemon, if one runs: SIGTERM, then
// SIGKILL after 5 s. It signals only a process whose command line is the
// lab's serve command.
func StopServe(ctx context.Context, dir string) error {
	pid, err := readPID(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve pid file: %w", err)
	}
	defer os.Remove(filepath.Join(dir, pidFile))
	prefix := filepath.Base(dir)
	if !isServe(pid, prefix) {
		return nil // gone, or the pid now belongs to someone else
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop serve daemon %d: %w", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for isServe(pid, prefix) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
