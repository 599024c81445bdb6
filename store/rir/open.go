package rir

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

// Source is an opened file or download.
type Source struct {
	io.Reader
	// Size is the length in bytes when known (for progress), else -1.
	Size   int64
	closer []io.Closer
}

// Close releases the file or connection.
func (s *Source) Close() error {
	var first error
	for i := len(s.closer) - 1; i >= 0; i-- {
		if err := s.closer[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// IsURL reports whether src names an http or https location.
func IsURL(src string) bool {
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// Open opens a local file or fetches an http(s) URL (the registries
// publish their files at e.g.
// https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest).
// Gzip-compressed content is decompressed transparently. wrap, when not
// nil, wraps the raw byte stream, e.g. to count bytes for a progress bar.
func Open(ctx context.Context, src string, wrap func(r io.Reader, size int64) io.Reader) (*Source, error) {
	s := &Source{Size: -1}
	var raw io.Reader
	if IsURL(src) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", src, err)
		}
		req.Header.Set("User-Agent", "cutoff (internet reachability prober)")
		client := &http.Client{Timeout: 10 * time.Minute}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", src, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("fetch %s: %s", src, resp.Status)
		}
		s.closer = append(s.closer, resp.Body)
		s.Size = resp.ContentLength
		raw = resp.Body
	} else {
		f, err := os.Open(src)
		if err != nil {
			return nil, err // *fs.PathError: "open FILE: reason"
		}
		s.closer = append(s.closer, f)
		if fi, err := f.Stat(); err == nil {
			s.Size = fi.Size()
		}
		raw = f
	}
	if wrap != nil {
		raw = wrap(raw, s.Size)
	}
	br := bufio.NewReaderSize(raw, 64*1024)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("read %s: %w", src, err)
		}
		s.closer = append(s.closer, zr)
		s.Reader = zr
	} else {
		s.Reader = br
	}
	return s, nil
}

// CheckOverlap rejects a set of networks in which two prefixes overlap:
// every address must belong to one network only. name is used in the
// error, which names both lines.
func CheckOverlap(name string, nets []Network) error {
	sorted := append([]Network(nil), nets...)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i].Prefix, sorted[j].Prefix
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
	// Prefixes are nested or disjoint, and sorted by start; as long as no
	// overlap has been found they are disjoint, so the previous one ends
	// last and is the only one the next can overlap.
	for i := 1; i < len(sorted); i++ {
		prev, cur := sorted[i-1], sorted[i]
		if prev.Prefix.Overlaps(cur.Prefix) {
			first, second := prev, cur
			if second.Line < first.Line {
				first, second = second, first
			}
			return &Error{File: name, Line: second.Line, Msg: fmt.Sprintf("%s overlaps %s (line %d)", second.Prefix, first.Prefix, first.Line)}
		}
	}
	return nil
}
