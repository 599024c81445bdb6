// Package pgtemp starts a throwaway PostgreSQL cluster from the installed
// server binaries, listening only on a unix socket in a temporary
// directory, and removes it again. Tests and `cutoff demo` use it when no
// database is configured.
//
// PostgreSQL refuses to run as root, so when the caller is root the server
// runs as the unprivileged "postgres" user (or "nobody" where that user
// does not exist).
package pgtemp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the cluster's superuser.
const Superuser = "cutoff"

// Options tune a cluster. The zero value is a fast, disposable cluster.
type Options struct {
	// Durable keeps fsync on. Off by default: a throwaway cluster's data
	// is not worth the wait, and benchmarks say so in their output.
	Durable bool
	// Settings are extra server settings (name → value).
	Settings map[string]string
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
	// Detach lets the server outlive this process, for a user who wants
	// to look at the data afterwards: it is then theirs to stop (kill
	// PID) and remove (Dir). By default the server gets a parent-death
	// signal, so a crashed test run leaves no server behind.
	Detach bool
}

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	// Dir holds everything: the data directory, the socket and the log.
	Dir string
	// SocketDir is the directory of the server's unix socket.
	SocketDir string

	bin      string
	args     []string
	detach   bool
	cred     *syscall.Credential
	cmd      *exec.Cmd
	waitErr  chan error
	stopOnce sync.Once
	stopErr  error
}

// BinDir finds the directory holding initdb and postgres: $PATH first, then
// Debian's /usr/lib/postgresql/<version>/bin, newest version first.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
		// /usr/local/bin may link initdb only; resolve the link.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("find postgresql server binaries: no initdb on PATH or under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start initialises and starts a new cluster in a fresh temporary
// directory. The server is a child of this process and is told to stop if
// this process dies, so a killed test run leaves no server behind.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cutoff-pg-")
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	// The server user must reach the socket directory, and lab processes
	// in other network namespaces connect through it too.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &Cluster{Dir: dir, SocketDir: dir, detach: opts.Detach}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if cred != nil {
		for _, p := range []string{dir, data} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				os.RemoveAll(dir)
				return nil, fmt.Errorf("start postgres: chown %s: %w", p, err)
			}
		}
	}

	log.Info("initdb", "dir", data)
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", data, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, lastLines(out, 5))
	}

	settings := map[string]string{
		"listen_addresses":        "",
		"unix_socket_directories": dir,
		"max_connections":         "200",
		"shared_buffers":          "128MB",
		"max_wal_size":            "2GB",
		"log_min_messages":        "warning",
		"timezone":                "UTC",
	}
	if !opts.Durable {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	args := []string{"-D", data}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer logf.Close()
	if cred != nil {
		logf.Chown(int(cred.Uid), int(cred.Gid))
	}
	c.bin, c.args, c.cred = bin, args, cred
	if err := c.spawn(logf); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	log.Info("postgres started", "pid", c.PID(), "socket", dir)

	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case werr := <-c.waitErr:
			c.waitErr <- werr
			log, _ := os.ReadFile(filepath.Join(c.Dir, "postgres.log"))
			return fmt.Errorf("postgres exited during start-up (%v): %s", werr, lastLines(log, 5))
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL returns a connection string for database db over the unix socket.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("host=%s user=%s dbname=%s sslmode=disable", c.SocketDir, Superuser, db)
}

// PID is the server's process id.
func (c *Cluster) PID() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Stop shuts the server down (fast shutdown: sessions are ended) and
// removes its directory. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.halt()
		c.stopErr = os.RemoveAll(c.Dir)
	})
	return c.stopErr
}

// spawn starts the server process. It runs from a goroutine locked to its
// OS thread for the server's whole life: the kernel sends Pdeathsig when the
// thread that forked the child exits, and Go may end a thread that another
// goroutine locked (the lab's namespace switching does), which would kill
// the server early.
func (c *Cluster) spawn(logf *os.File) error {
	started := make(chan error, 1)
	c.waitErr = make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Not CommandContext: the server outlives the caller's context.
		cmd := exec.Command(filepath.Join(c.bin, "postgres"), c.args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Dir = c.Dir
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: c.cred,
			Setpgid:    true, // a ^C to the test run reaches us, not the server directly
		}
		if !c.detach {
			cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
		}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start postgres: %w", err)
			runtime.UnlockOSThread()
			return
		}
		c.cmd = cmd
		started <- nil
		c.waitErr <- cmd.Wait()
		runtime.UnlockOSThread()
	}()
	return <-started
}

func (c *Cluster) halt() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.waitErr:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.waitErr
	}
	c.cmd = nil
}

// Pause stops the server without removing its data, so that a test can
// see how a client copes with the database going away. Resume starts it
// again on the same socket.
func (c *Cluster) Pause() error {
	if c.cmd == nil {
		return errors.New("pause postgres: not running")
	}
	c.halt()
	return nil
}

// Resume restarts a paused server and waits until it accepts connections.
func (c *Cluster) Resume(ctx context.Context) error {
	if c.cmd != nil {
		return errors.New("resume postgres: already running")
	}
	logf, err := os.OpenFile(filepath.Join(c.Dir, "postgres.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("resume postgres: %w", err)
	}
	defer logf.Close()
	if err := c.spawn(logf); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

// serverCredential returns the identity to run the server as: nil (this
// process's own) unless we are root, which PostgreSQL refuses.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("start postgres as root: no unprivileged user (postgres or nobody) to run it as")
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
