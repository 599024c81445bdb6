// Package rir reads the address space of countries from the regional
// internet registries' statistics files ("delegated-*-extended", the same
// format at AFRINIC, APNIC, ARIN, LACNIC and RIPE NCC) and from plain CIDR
// lists, and turns them into exact prefixes.
//
// Parsing is strict: a file with one malformed line is rejected whole,
// with the file name and line number, so that a corrupted download never
// half-replaces a country's address space.
package rir

import (
	"bufio"
	"fmt"
	"io"
	"math/bits"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Record is one resource line of a statistics file.
type Record struct {
	Registry string // afrinic, apnic, arin, lacnic, ripencc
	CC       string // ISO 3166 code; "" or ZZ for unassigned space
	Type     string // ipv4, ipv6 or asn
	// Start and Value as in the file: for ipv4 an address and a count of
	// addresses (not always a power of two), for ipv6 an address and a
	// prefix length, for asn the first AS number and a count.
	Start    string
	Value    uint64
	Date     time.Time // zero when the file gives none
	Status   string    // allocated, assigned, available or reserved
	OpaqueID string    // the holder's opaque id (extended format only)
	Line     int
}

// Error is a malformed line.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

var (
	registries = map[string]bool{"afrinic": true, "apnic": true, "arin": true, "iana": true, "lacnic": true, "ripencc": true}
	statuses   = map[string]bool{"allocated": true, "assigned": true, "available": true, "reserved": true}
	ccPattern  = regexp.MustCompile(`^([A-Z]{2})?$`)
	versionPat = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
)

// File is a parsed statistics file.
type File struct {
	Registry string // from the header
	Serial   string // the header's serial, usually the file's date
	Records  []Record
}

// Parse reads a statistics file. name is used in error messages. Header,
// summary and comment lines are checked and skipped; every record line is
// validated, whatever its country.
func Parse(r io.Reader, name string) (*File, error) {
	f := &File{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	sawHeader := false
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "|")
		bad := func(format string, args ...any) error {
			return &Error{File: name, Line: n, Msg: fmt.Sprintf(format, args...)}
		}
		if !sawHeader && versionPat.MatchString(fields[0]) {
			// version|registry|serial|records|startdate|enddate|UTCoffset
			if len(fields) != 7 {
				return nil, bad("header has %d fields, want 7", len(fields))
			}
			if !registries[fields[1]] {
				return nil, bad("header names unknown registry %q", fields[1])
			}
			f.Registry, f.Serial = fields[1], fields[2]
			sawHeader = true
			continue
		}
		if len(fields) == 6 && fields[1] == "*" && fields[3] == "*" && fields[5] == "summary" {
			if _, err := strconv.ParseUint(fields[4], 10, 64); err != nil {
				return nil, bad("summary count %q is not a number", fields[4])
			}
			continue
		}
		rec, err := parseRecord(fields)
		if err != nil {
			return nil, bad("%v", err)
		}
		if !sawHeader {
			return nil, bad("record before the file's header line")
		}
		rec.Line = n
		f.Records = append(f.Records, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, &Error{File: name, Line: n + 1, Msg: err.Error()}
	}
	if !sawHeader {
		return nil, &Error{File: name, Msg: "no header line: not an RIR statistics file"}
	}
	return f, nil
}

func parseRecord(fields []string) (Record, error) {
	// registry|cc|type|start|value|date|status[|opaque-id[|extensions…]]
	if len(fields) < 7 {
		return Record{}, fmt.Errorf("record has %d fields, want at least 7 (registry|cc|type|start|value|date|status)", len(fields))
	}
	rec := Record{
		Registry: fields[0],
		CC:       fields[1],
		Type:     fields[2],
		Start:    fields[3],
		Status:   fields[6],
	}
	if len(fields) > 7 {
		rec.OpaqueID = fields[7]
	}
	if !registries[rec.Registry] {
		return rec, fmt.Errorf("unknown registry %q", rec.Registry)
	}
	if !ccPattern.MatchString(rec.CC) {
		return rec, fmt.Errorf("country code %q is not two capital letters", rec.CC)
	}
	if !statuses[rec.Status] {
		return rec, fmt.Errorf("unknown status %q", rec.Status)
	}
	v, err := strconv.ParseUint(fields[4], 10, 64)
	if err != nil {
		return rec, fmt.Errorf("value %q is not a number", fields[4])
	}
	rec.Value = v
	if d := fields[5]; d != "" && d != "00000000" {
		t, err := time.Parse("20060102", d)
		if err != nil {
			return rec, fmt.Errorf("date %q is not YYYYMMDD", d)
		}
		rec.Date = t
	}
	switch rec.Type {
	case "ipv4":
		a, err := netip.ParseAddr(rec.Start)
		if err != nil || !a.Is4() {
			return rec, fmt.Errorf("ipv4 start %q is not an IPv4 address", rec.Start)
		}
		if v == 0 || uint64(ip4(a))+v > 1<<32 {
			return rec, fmt.Errorf("ipv4 count %d from %s is empty or runs past 255.255.255.255", v, a)
		}
	case "ipv6":
		a, err := netip.ParseAddr(rec.Start)
		if err != nil || !a.Is6() || a.Is4In6() {
			return rec, fmt.Errorf("ipv6 start %q is not an IPv6 address", rec.Start)
		}
		if v > 128 {
			return rec, fmt.Errorf("ipv6 prefix length %d is over 128", v)
		}
		if p := netip.PrefixFrom(a, int(v)); p.Masked() != p {
			return rec, fmt.Errorf("ipv6 %s/%d has host bits set", a, v)
		}
	case "asn":
		if _, err := strconv.ParseUint(rec.Start, 10, 32); err != nil {
			return rec, fmt.Errorf("asn start %q is not an AS number", rec.Start)
		}
		if v == 0 {
			return rec, fmt.Errorf("asn count is 0")
		}
	default:
		return rec, fmt.Errorf("unknown type %q (want ipv4, ipv6 or asn)", rec.Type)
	}
	return rec, nil
}

// Prefixes returns the exact CIDR prefixes an ipv4 or ipv6 record covers.
// An IPv4 count that is not a power of two, or a start not aligned to it,
// spans several prefixes.
func (r Record) Prefixes() []netip.Prefix {
	switch r.Type {
	case "ipv4":
		a, _ := netip.ParseAddr(r.Start)
		return SplitRange(a, r.Value)
	case "ipv6":
		a, _ := netip.ParseAddr(r.Start)
		return []netip.Prefix{netip.PrefixFrom(a, int(r.Value))}
	}
	return nil
}

// SplitRange returns the fewest prefixes that exactly cover count IPv4
// addresses from start.
func SplitRange(start netip.Addr, count uint64) []netip.Prefix {
	var out []netip.Prefix
	cur := uint64(ip4(start))
	end := cur + count // exclusive; at most 1<<32
	for cur < end {
		// The largest block aligned at cur that does not run past end.
		size := uint64(1) << 32
		if cur != 0 {
			size = cur & -cur
		}
		for size > end-cur {
			size >>= 1
		}
		out = append(out, netip.PrefixFrom(addr4(uint32(cur)), 32-bits.TrailingZeros64(size)))
		cur += size
	}
	return out
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Network is a prefix of a country with what the registry says of it.
type Network struct {
	Prefix    netip.Prefix
	Registry  string
	Status    string
	Delegated time.Time
	// ASN is the origin AS where the file ties one to the prefix: the
	// extended format's opaque id names the holder, and a holder with
	// exactly one AS number of that country gives it.
	ASN  uint32
	Line int
}

// Country selects a country's ipv4 and ipv6 delegations (allocated or
// assigned) from a parsed file.
func (f *File) Country(cc string) []Network {
	asns := map[string][]uint32{}
	for _, r := range f.Records {
		if r.Type == "asn" && r.CC == cc && r.OpaqueID != "" && r.Value == 1 {
			n, _ := strconv.ParseUint(r.Start, 10, 32)
			asns[r.OpaqueID] = append(asns[r.OpaqueID], uint32(n))
		}
	}
	var out []Network
	for _, r := range f.Records {
		if r.CC != cc || (r.Type != "ipv4" && r.Type != "ipv6") || (r.Status != "allocated" && r.Status != "assigned") {
			continue
		}
		var asn uint32
		if a := asns[r.OpaqueID]; len(a) == 1 {
			asn = a[0]
		}
		for _, p := range r.Prefixes() {
			out = append(out, Network{Prefix: p, Registry: r.Registry, Status: r.Status, Delegated: r.Date, ASN: asn, Line: r.Line})
		}
	}
	return out
}

// List is a parsed plain CIDR list.
type List struct {
	// Name is the country's name when the list's comments give it, as
	// ipverse's country-ip-blocks do ("# Country: North Korea (KP)").
	Name     string
	Prefixes []Network
}

var countryComment = regexp.MustCompile(`^#\s*Country:\s*(.+?)\s*\(([A-Z]{2})\)\s*$`)

// ParseList reads one CIDR per line; '#' starts a comment, blank lines are
// skipped. A prefix must be written with its host bits clear.
func ParseList(r io.Reader, name string) (*List, error) {
	l := &List{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(strings.TrimRight(sc.Text(), "\r"))
		if m := countryComment.FindStringSubmatch(line); m != nil {
			l.Name = m[1]
		}
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		p, err := netip.ParsePrefix(line)
		if err != nil {
			return nil, &Error{File: name, Line: n, Msg: fmt.Sprintf("%q is not a CIDR prefix (want e.g. 198.51.100.0/24)", line)}
		}
		if p.Masked() != p {
			return nil, &Error{File: name, Line: n, Msg: fmt.Sprintf("%s has host bits set (did you mean %s?)", p, p.Masked())}
		}
		if p.Addr().Is4In6() {
			return nil, &Error{File: name, Line: n, Msg: fmt.Sprintf("%s is an IPv4-mapped IPv6 prefix; write it as IPv4", p)}
		}
		l.Prefixes = append(l.Prefixes, Network{Prefix: p, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, &Error{File: name, Line: n + 1, Msg: err.Error()}
	}
	return l, nil
}
