package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsDir is where named network namespaces live, shared with iproute2 so
// that `ip netns exec` finds the lab's namespaces.
const nsDir = "/run/netns"

// ensureNSDir makes /run/netns a shared mount point, as `ip netns add`
// does, so namespaces mounted later are visible in mount namespaces
// created before (`ip netns exec` makes one per command).
func ensureNSDir() error {
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", nsDir, err)
	}
	err := unix.Mount("", nsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself first.
		if err = unix.Mount(nsDir, nsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", nsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", nsDir, err)
	}
	return nil
}

// isNamespace reports whether path is a mounted network namespace.
func isNamespace(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// createNamespace creates the named namespace unless it exists. A fresh
// OS thread unshares into the new namespace and bind-mounts it; that
// thread is never returned to the Go scheduler (its goroutine exits while
// still locked, so the runtime ends it).
func createNamespace(name string) error {
	path := filepath.Join(nsDir, name)
	if isNamespace(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("mount %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// deleteNamespace unmounts and removes a named namespace. The kernel frees
// it, with every interface inside (and so both ends of its veth pairs),
// once no process or socket holds it.
func deleteNamespace(name string) error {
	path := filepath.Join(nsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

// Namespaces lists the namespaces of the lab with this prefix, whether or
// not the lab is whole.
func Namespaces(prefix string) ([]string, error) { return namespacesOf(prefix) }

// namespacesOf lists the namespaces that belong to the lab with this
// prefix: "<prefix>-<role>" where role has no dash. Roles never contain a
// dash, so the prefix is everything before the last dash and a lab never
// claims the namespaces of a lab whose prefix merely starts like its own
// ("cutoff" does not own "cutoff-x-vp1").
func namespacesOf(prefix string) ([]string, error) {
	ents, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		i := strings.LastIndexByte(name, '-')
		if i < 0 || name[:i] != prefix || !roleRe.MatchString(name[i+1:]) {
			continue
		}
		out = append(out, name)
	}
	return out, nil
}

// inNamespace runs fn on an OS thread switched into ns, then switches the
// thread back. If switching back fails the thread stays locked and ends
// with its goroutine, so no goroutine ever runs in the wrong namespace.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace: %w", err))
			return // still locked: the runtime ends this thread
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// sysctl sets a kernel parameter; called inside a namespace, it sets that
// namespace's copy (net.* parameters are per namespace and /proc/sys/net
// follows the calling thread's namespace). A parameter this kernel lacks
// is skipped when optional.
func sysctl(key, value string, optional bool) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	err := os.WriteFile(path, []byte(value), 0)
	if optional && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	return strings.TrimSpace(string(b)), err
}
