//go:build linux

package prober

import (
	"testing"

	"github.com/miekg/dns"
)

func TestDNSMatches(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("net0.lab.", dns.TypeSOA)
	reply := func(edit func(r *dns.Msg)) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		edit(r)
		return r
	}
	tests := []struct {
		name string
		give *dns.Msg
		want bool
	}{
		{"answer", reply(func(*dns.Msg) {}), true},
		{"any rcode", reply(func(r *dns.Msg) { r.Rcode = dns.RcodeServerFailure }), true},
		{"name in other case", reply(func(r *dns.Msg) { r.Question[0].Name = "NET0.Lab." }), true},
		{"wrong id", reply(func(r *dns.Msg) { r.Id++ }), false},
		{"not a response", reply(func(r *dns.Msg) { r.Response = false }), false},
		{"other name", reply(func(r *dns.Msg) { r.Question[0].Name = "net1.lab." }), false},
		{"other type", reply(func(r *dns.Msg) { r.Question[0].Qtype = dns.TypeA }), false},
		{"other class", reply(func(r *dns.Msg) { r.Question[0].Qclass = dns.ClassCHAOS }), false},
		{"no question", reply(func(r *dns.Msg) { r.Question = nil }), false},
		{"two questions", reply(func(r *dns.Msg) { r.Question = append(r.Question, r.Question[0]) }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matches(q, tt.give); got != tt.want {
				t.Errorf("matches = %v, want %v", got, tt.want)
			}
		})
	}
}
