package lab

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Packet loss is emulated with nftables because this kernel has no
// sch_netem: one table per namespace with a postrouting chain holding, per
// lossy link, the equivalent of
//
//	oifname "net1" numgen random mod 100 < 20 drop comment "loss net1 20"
//
// The rules are stateless (no conntrack), and the comment carries the
// setting so that Status reads it back from the kernel.
const (
	nftTable = "cutoff_lab"
	nftChain = "loss"
)

// lossRules reads the loss percentages per interface from ns's table.
func lossRules(c *nftables.Conn) (map[string]int, error) {
	out := map[string]int{}
	t, err := c.ListTableOfFamily(nftTable, nftables.TableFamilyIPv4)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return out, nil
		}
		return nil, fmt.Errorf("nftables: list table: %w", err)
	}
	rules, err := c.GetRules(t, &nftables.Chain{Name: nftChain, Table: t})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return out, nil
		}
		return nil, fmt.Errorf("nftables: list rules: %w", err)
	}
	for _, r := range rules {
		s, ok := userdata.GetString(r.UserData, userdata.TypeComment)
		f := strings.Fields(s)
		if !ok || len(f) != 3 || f[0] != "loss" {
			continue
		}
		if n, err := strconv.Atoi(f[2]); err == nil {
			out[f[1]] = n
		}
	}
	return out, nil
}

// setLossRules replaces ns's table with one dropping the given share of
// packets leaving each named interface, in one atomic batch; an empty map
// removes the table.
func setLossRules(c *nftables.Conn, loss map[string]int) error {
	_, err := c.ListTableOfFamily(nftTable, nftables.TableFamilyIPv4)
	exists := err == nil
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: list table: %w", err)
	}
	t := &nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4}
	if exists {
		c.DelTable(t)
	}
	if len(loss) > 0 {
		c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{Name: nftChain, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityFilter})
		ifaces := make([]string, 0, len(loss))
		for k := range loss {
			ifaces = append(ifaces, k)
		}
		slices.Sort(ifaces)
		for _, iface := range ifaces {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: lossExprs(iface, loss[iface]),
				UserData: userdata.AppendString(nil, userdata.TypeComment, fmt.Sprintf("loss %s %d", iface, loss[iface]))})
		}
	}
	if !exists && len(loss) == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

func lossExprs(iface string, percent int) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, iface)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
		// numgen writes host byte order and cmp compares bytes, so "<"
		// needs the number in network order first (as nft itself does).
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint32(uint32(percent))},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
