package rir

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestSplitRange(t *testing.T) {
	tests := []struct {
		name  string
		start string
		count uint64
		want  []netip.Prefix
	}{
		{"one /24", "198.51.100.0", 256, prefixes("198.51.100.0/24")},
		{"north korea", "175.45.176.0", 1024, prefixes("175.45.176.0/22")},
		{"2560 addresses", "196.4.20.0", 2560, prefixes("196.4.20.0/22", "196.4.24.0/22", "196.4.28.0/23")},
		{"393216 addresses", "164.146.0.0", 393216, prefixes("164.146.0.0/15", "164.148.0.0/14")},
		{"1280 addresses", "196.13.234.0", 1280, prefixes("196.13.234.0/23", "196.13.236.0/23", "196.13.238.0/24")},
		{"unaligned start", "10.0.0.1", 3, prefixes("10.0.0.1/32", "10.0.0.2/31")},
		{"single address", "10.0.0.7", 1, prefixes("10.0.0.7/32")},
		{"whole space", "0.0.0.0", 1 << 32, prefixes("0.0.0.0/0")},
		{"to the top", "255.255.255.0", 256, prefixes("255.255.255.0/24")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitRange(netip.MustParseAddr(tt.start), tt.count)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("SplitRange(%s, %d) = %v, want %v", tt.start, tt.count, got, tt.want)
			}
		})
	}
}

// FuzzSplitRange checks the invariants of splitting: the prefixes are
// aligned, disjoint, contiguous and cover exactly count addresses.
func FuzzSplitRange(f *testing.F) {
	f.Add(uint32(0xC0000200), uint32(2560))
	f.Add(uint32(1), uint32(3))
	f.Add(uint32(0xFFFFFF00), uint32(256))
	f.Fuzz(func(t *testing.T, start, count uint32) {
		if count == 0 || uint64(start)+uint64(count) > 1<<32 {
			return
		}
		ps := SplitRange(addr4(start), uint64(count))
		next := uint64(start)
		var total uint64
		for _, p := range ps {
			if p.Masked() != p {
				t.Fatalf("%v: %s not aligned", ps, p)
			}
			if uint64(ip4(p.Addr())) != next {
				t.Fatalf("%v: %s does not start at %s", ps, p, addr4(uint32(next)))
			}
			size := uint64(1) << (32 - p.Bits())
			next += size
			total += size
		}
		if total != uint64(count) {
			t.Fatalf("%v covers %d addresses, want %d", ps, total, count)
		}
		if len(ps) > 62 {
			t.Fatalf("%d prefixes for one range: not minimal", len(ps))
		}
	})
}

func TestParseAPNIC(t *testing.T) {
	f, err := os.Open("testdata/delegated-apnic-extended-sample")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	file, err := Parse(f, "apnic")
	if err != nil {
		t.Fatal(err)
	}
	if file.Registry != "apnic" || file.Serial != "20160131" {
		t.Fatalf("header: registry %q serial %q", file.Registry, file.Serial)
	}
	kp := file.Country("KP")
	if len(kp) != 1 {
		t.Fatalf("KP networks: %v, want one", kp)
	}
	n := kp[0]
	if n.Prefix != netip.MustParsePrefix("175.45.176.0/22") || n.ASN != 131279 || n.Status != "allocated" || n.Delegated.Format("2006-01-02") != "2009-12-21" {
		t.Fatalf("KP network %+v", n)
	}
	if got := file.Country("JP"); len(got) != 3 || got[2].Prefix != netip.MustParsePrefix("2001:200::/35") {
		t.Fatalf("JP networks %v, want two ipv4 and 2001:200::/35", got)
	}
	if got := file.Country("XX"); len(got) != 0 {
		t.Fatalf("XX networks %v, want none", got)
	}
}

func TestParseAFRINIC(t *testing.T) {
	f, err := os.Open("testdata/delegated-afrinic-extended-sample")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	file, err := Parse(f, "afrinic")
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Prefix
	for _, n := range file.Country("ZA") {
		got = append(got, n.Prefix)
	}
	want := prefixes("164.146.0.0/15", "164.148.0.0/14", "196.4.20.0/22", "196.4.24.0/22", "196.4.28.0/23",
		"196.13.234.0/23", "196.13.236.0/23", "196.13.238.0/24", "196.1.87.0/24", "196.1.88.0/22", "2001:4200::/32", "2001:4210::/32")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ZA prefixes\n got %v\nwant %v", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	const header = "2|apnic|20160131|3||20160130|+1000\n"
	tests := []struct {
		name string
		give string
		line int
		want string
	}{
		{"bad address", header + "apnic|KP|ipv4|175.45.176.x|1024|20091221|allocated|A9\n", 2, "not an IPv4 address"},
		{"bad count", header + "apnic|KP|ipv4|175.45.176.0|1O24|20091221|allocated|A9\n", 2, "not a number"},
		{"zero count", header + "apnic|KP|ipv4|175.45.176.0|0|20091221|allocated|A9\n", 2, "empty"},
		{"past the end", header + "apnic|KP|ipv4|255.255.255.0|512|20091221|allocated|A9\n", 2, "runs past"},
		{"too few fields", header + "apnic|KP|ipv4|175.45.176.0|1024\n", 2, "fields"},
		{"unknown type", header + "apnic|KP|ipv5|175.45.176.0|1024|20091221|allocated|A9\n", 2, "unknown type"},
		{"bad date", header + "apnic|KP|ipv4|175.45.176.0|1024|2009-12-21|allocated|A9\n", 2, "YYYYMMDD"},
		{"bad status", header + "apnic|KP|ipv4|175.45.176.0|1024|20091221|stolen|A9\n", 2, "status"},
		{"bad country", header + "apnic|kp|ipv4|175.45.176.0|1024|20091221|allocated|A9\n", 2, "country code"},
		{"ipv6 host bits", header + "apnic|JP|ipv6|2001:200::1|35|19990813|allocated|A9\n", 2, "host bits"},
		{"ipv6 length", header + "apnic|JP|ipv6|2001:200::|129|19990813|allocated|A9\n", 2, "over 128"},
		{"unknown registry", header + "apnoc|KP|ipv4|175.45.176.0|1024|20091221|allocated|A9\n", 2, "registry"},
		{"no header", "apnic|KP|ipv4|175.45.176.0|1024|20091221|allocated|A9\n", 1, "header"},
		{"empty file", "", 0, "no header"},
		{"binary junk", header + "\x00\x01\x02\n", 2, "fields"},
		{"corruption deep in the file", header + "apnic|KP|ipv4|175.45.176.0|1024|20091221|allocated|A9\n# ok\napnic|CN|ipv4|1.0.1.0|256|20110414|allocated|A9\napnic|CN|ipv4|1.0.2.0|25|6|20110414|allocated|A9\n", 5, "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.give), "f.txt")
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse = %v, want *rir.Error", err)
			}
			if perr.Line != tt.line || perr.File != "f.txt" || !strings.Contains(perr.Msg, tt.want) {
				t.Fatalf("error %q (line %d), want line %d mentioning %q", err, perr.Line, tt.line, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	seed, _ := os.ReadFile("testdata/delegated-apnic-extended-sample")
	f.Add(string(seed))
	f.Add("2|ripencc|1|1||1|+0\nripencc|NL|ipv4|193.0.0.0|2048|19930901|allocated|x\n")
	f.Fuzz(func(t *testing.T, s string) {
		file, err := Parse(strings.NewReader(s), "fuzz")
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		// Every accepted record yields valid prefixes.
		for _, r := range file.Records {
			for _, p := range r.Prefixes() {
				if !p.IsValid() || p.Masked() != p {
					t.Fatalf("record %+v gave prefix %v", r, p)
				}
			}
		}
	})
}

func TestParseList(t *testing.T) {
	f, err := os.Open("testdata/kp-ipv4-aggregated.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := ParseList(f, "kp")
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "North Korea" || len(l.Prefixes) != 1 || l.Prefixes[0].Prefix != netip.MustParsePrefix("175.45.176.0/22") {
		t.Fatalf("list %+v", l)
	}

	tests := []struct {
		name string
		give string
		line int
		want string
	}{
		{"host bits", "# x\n175.45.176.1/22\n", 2, "did you mean 175.45.176.0/22"},
		{"not a prefix", "175.45.176.0/22\n\nnonsense\n", 3, "not a CIDR"},
		{"bare address", "175.45.176.0\n", 1, "not a CIDR"},
		{"bad length", "175.45.176.0/33\n", 1, "not a CIDR"},
		{"mapped", "::ffff:175.45.176.0/118\n", 1, "IPv4-mapped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseList(strings.NewReader(tt.give), "l.txt")
			var perr *Error
			if !errors.As(err, &perr) || perr.Line != tt.line || !strings.Contains(perr.Msg, tt.want) {
				t.Fatalf("ParseList = %v, want line %d mentioning %q", err, tt.line, tt.want)
			}
		})
	}
	l, err = ParseList(strings.NewReader("198.51.100.0/24 # trailing comment\r\n2001:db8::/32\n"), "l.txt")
	if err != nil || len(l.Prefixes) != 2 {
		t.Fatalf("ParseList with comments = %+v, %v", l, err)
	}
}

func TestCheckOverlap(t *testing.T) {
	nets := func(ss ...string) []Network {
		out := make([]Network, len(ss))
		for i, s := range ss {
			out[i] = Network{Prefix: netip.MustParsePrefix(s), Line: i + 1}
		}
		return out
	}
	tests := []struct {
		name string
		give []Network
		want string // "" for no overlap
	}{
		{"disjoint", nets("198.19.0.0/24", "198.19.1.0/24", "2001:db8::/32"), ""},
		{"adjacent", nets("198.19.0.0/23", "198.19.2.0/23"), ""},
		{"nested", nets("198.19.0.0/16", "10.0.0.0/8", "198.19.4.0/24"), "198.19.4.0/24 overlaps 198.19.0.0/16 (line 1)"},
		{"duplicate", nets("198.19.0.0/24", "198.19.0.0/24"), "overlaps"},
		{"nested far apart", nets("198.0.0.0/8", "198.1.0.0/16", "198.200.0.0/16"), "overlaps 198.0.0.0/8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckOverlap("in", tt.give)
			if tt.want == "" && err != nil {
				t.Fatalf("CheckOverlap = %v, want nil", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("CheckOverlap = %v, want %q", err, tt.want)
			}
		})
	}
}

// LACNIC's extended file numbers its opaque ids, not hashes them, and lists
// address counts like 131072 (a /15) and 4096 (a /20): the records of
// Cuba, copied from its file of 2016-01-29.
func TestParseLACNIC(t *testing.T) {
	f, err := os.Open("testdata/delegated-lacnic-extended-sample")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	file, err := Parse(f, "lacnic")
	if err != nil {
		t.Fatal(err)
	}
	if file.Registry != "lacnic" || file.Serial != "20160129" {
		t.Fatalf("header: registry %q serial %q", file.Registry, file.Serial)
	}
	cu := file.Country("CU")
	if len(cu) != 27 {
		t.Fatalf("CU: %d networks, want 21 ipv4 and 6 ipv6", len(cu))
	}
	n := cu[0]
	// AS27725 shares the opaque id 21116 with 152.206.0.0/15.
	if n.Prefix != netip.MustParsePrefix("152.206.0.0/15") || n.ASN != 27725 || n.Status != "allocated" || n.Delegated.Format("2006-01-02") != "2014-06-04" {
		t.Fatalf("first CU network %+v", n)
	}
}
