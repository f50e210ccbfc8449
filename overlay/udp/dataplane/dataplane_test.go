package dataplane

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func addr32(s string) uint32 {
	a := netip.MustParseAddr(s).As4()
	return binary.BigEndian.Uint32(a[:])
}

func TestPeerTableLongestMatch(t *testing.T) {
	tab, err := newPeerTable([]Peer{
		{Subnet: netip.MustParsePrefix("10.42.2.0/24"), Addr: netip.MustParseAddrPort("192.168.1.2:8285")},
		{Subnet: netip.MustParsePrefix("10.42.3.0/24"), Addr: netip.MustParseAddrPort("192.168.1.3:8285")},
		// A longer lease inside a shorter one: the longer wins.
		{Subnet: netip.MustParsePrefix("10.42.4.0/22"), Addr: netip.MustParseAddrPort("192.168.1.4:8285")},
		{Subnet: netip.MustParsePrefix("10.42.5.0/24"), Addr: netip.MustParseAddrPort("192.168.1.5:9000")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]string{
		"10.42.2.7":   "192.168.1.2:8285",
		"10.42.3.255": "192.168.1.3:8285",
		"10.42.4.1":   "192.168.1.4:8285",
		"10.42.5.1":   "192.168.1.5:9000",
		"10.42.7.1":   "192.168.1.4:8285",
		"10.42.1.1":   "",
		"10.43.2.7":   "",
	} {
		got := ""
		if d := tab.lookup(addr32(dst)); d != nil {
			got = d.addr.String()
			if !d.subnet.contains(addr32(dst)) {
				t.Errorf("%s: peer subnet does not contain it", dst)
			}
		}
		if got != want {
			t.Errorf("lookup %s = %q, want %q", dst, got, want)
		}
	}
	if (&peerTable{}).lookup(addr32("10.42.2.1")) != nil {
		t.Error("empty table found a peer")
	}
}

func TestPeerTableRejects(t *testing.T) {
	for _, p := range []Peer{
		{Subnet: netip.MustParsePrefix("fd00::/64"), Addr: netip.MustParseAddrPort("192.168.1.2:8285")},
		{Subnet: netip.MustParsePrefix("10.42.2.0/24"), Addr: netip.MustParseAddrPort("[fd00::1]:8285")},
		{Subnet: netip.MustParsePrefix("10.42.2.0/24"), Addr: netip.MustParseAddrPort("192.168.1.2:0")},
		{Addr: netip.MustParseAddrPort("192.168.1.2:8285")},
	} {
		if _, err := newPeerTable([]Peer{p}); err == nil {
			t.Errorf("peer %+v accepted", p)
		}
	}
}

func TestIPv4Addrs(t *testing.T) {
	pkt := make([]byte, 40)
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], 40)
	copy(pkt[12:], []byte{10, 42, 2, 2})
	copy(pkt[16:], []byte{10, 42, 1, 2})
	src, dst, ok := ipv4Addrs(pkt)
	if !ok || src != addr32("10.42.2.2") || dst != addr32("10.42.1.2") {
		t.Fatalf("got %x %x %v", src, dst, ok)
	}
	if d, ok := ipv4Dst(pkt); !ok || d != addr32("10.42.1.2") {
		t.Fatalf("ipv4Dst: %x %v", d, ok)
	}
	bad := map[string]func([]byte){
		"IPv6":           func(p []byte) { p[0] = 0x60 },
		"short header":   func(p []byte) { p[0] = 0x44 },
		"length too big": func(p []byte) { binary.BigEndian.PutUint16(p[2:], 41) },
		"trailing bytes": func(p []byte) { binary.BigEndian.PutUint16(p[2:], 39) },
	}
	for name, spoil := range bad {
		p := append([]byte(nil), pkt...)
		spoil(p)
		if _, _, ok := ipv4Addrs(p); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, ok := ipv4Addrs(pkt[:19]); ok {
		t.Error("runt accepted")
	}
}

func TestPrefix4(t *testing.T) {
	p := newPrefix4(netip.MustParsePrefix("10.42.0.0/16"))
	if !p.contains(addr32("10.42.255.1")) || p.contains(addr32("10.43.0.1")) {
		t.Fatal("/16")
	}
	if all := newPrefix4(netip.MustParsePrefix("0.0.0.0/0")); !all.contains(addr32("8.8.8.8")) {
		t.Fatal("/0")
	}
}

func TestGSOControl(t *testing.T) {
	b := putGSO(make([]byte, gsoSpace), 1472)
	h, data, _, err := unix.ParseOneSocketControlMessage(b)
	if err != nil || h.Level != unix.SOL_UDP || h.Type != unix.UDP_SEGMENT || len(data) != 2 || binary.NativeEndian.Uint16(data) != 1472 {
		t.Fatalf("UDP_SEGMENT message: %+v %v %v", h, data, err)
	}
	if groSize(b) != 0 {
		t.Fatal("UDP_SEGMENT taken for UDP_GRO")
	}
	// The kernel reports UDP_GRO with the same layout but an int.
	gro := make([]byte, unix.CmsgSpace(4))
	(*unix.Cmsghdr)(unsafe.Pointer(&gro[0])).Level = unix.SOL_UDP
	(*unix.Cmsghdr)(unsafe.Pointer(&gro[0])).Type = unix.UDP_GRO
	(*unix.Cmsghdr)(unsafe.Pointer(&gro[0])).SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(gro[unix.CmsgLen(0):], 1472)
	if got := groSize(append(b, gro...)); got != 1472 {
		t.Fatalf("UDP_GRO after another message: %d", got)
	}
	if groSize(nil) != 0 || groSize([]byte{1, 2, 3}) != 0 {
		t.Fatal("no control message must mean 0")
	}
}
