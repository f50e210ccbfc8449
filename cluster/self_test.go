package cluster

import (
	"strings"
	"testing"
)

// Mount tables as a managed plugin sees them (abridged): on a host, where
// /run/docker/plugins is a bind of /run/docker/plugins/<id> on the host's
// /run tmpfs, and under scripts/engine2.sh, whose exec-root is /tmp/felt-NS.
const (
	pluginMountinfo = `1093 1024 0:118 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/plugins/x/rootfs
1094 1093 0:121 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1101 1093 0:25 /docker/plugins/` + pluginID + ` /run/docker/plugins rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=402012k,mode=755
1102 1093 8:1 /var/lib/docker/containers/hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
1103 1093 0:25 / /run/felt-docker ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=402012k,mode=755
`
	engine2Mountinfo = `2093 2024 0:218 / / rw,relatime - overlay overlay rw
2101 2093 0:30 /felt-ns2/plugins/` + feltID + ` /run/docker/plugins rw,relatime master:9 - tmpfs tmpfs rw
`
	// A bare binary on a host: the plugin directory is no mount point.
	hostMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:25 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=402012k,mode=755
40 25 0:25 /docker/plugins/` + pluginID + `/x /var/lib/docker/plugins/` + pluginID + `/rootfs/run/docker/plugins rw - tmpfs tmpfs rw
`
)

func TestPluginIDFromMountinfo(t *testing.T) {
	for _, c := range []struct {
		name, info, want string
	}{
		{"host", pluginMountinfo, pluginID},
		{"engine2", engine2Mountinfo, feltID},
		{"bare binary", hostMountinfo, ""},
		{"empty", "", ""},
		{"/var/run", strings.ReplaceAll(pluginMountinfo, " /run/docker/plugins ", " /var/run/docker/plugins "), pluginID},
		{"elsewhere", strings.ReplaceAll(pluginMountinfo, " /run/docker/plugins ", " /run/docker/plugins/x "), ""},
		// The last mount at the path is the one on top.
		{"stacked", pluginMountinfo + strings.ReplaceAll(engine2Mountinfo, "/ / ", "/x /x "), feltID},
		{"escaped mount point", "1 0 0:1 /docker/plugins/" + pluginID + ` /run/docker\040plugins rw - tmpfs tmpfs rw`, ""},
		{"short ID", "1 0 0:1 /docker/plugins/" + pluginID[:63] + " /run/docker/plugins rw - tmpfs tmpfs rw", ""},
		{"upper-case ID", "1 0 0:1 /docker/plugins/" + strings.ToUpper(pluginID) + " /run/docker/plugins rw - tmpfs tmpfs rw", ""},
		{"ID not last", "1 0 0:1 /docker/plugins/" + pluginID + "/sub /run/docker/plugins rw - tmpfs tmpfs rw", ""},
		{"not under plugins", "1 0 0:1 /docker/" + pluginID + " /run/docker/plugins rw - tmpfs tmpfs rw", ""},
		{"truncated line", "1 0 0:1 /docker/plugins/" + pluginID, ""},
		{"garbage", "\x00\xff\\\\\\ \n\n \\0 \\04 \\777 /plugins/\n", ""},
	} {
		got, ok := pluginIDFromMountinfo([]byte(c.info))
		if got != c.want || ok != (c.want != "") {
			t.Errorf("%s: %q, %v; want %q", c.name, got, ok, c.want)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:    "/a b",
		`/a\011\012`: "/a\t\n",
		`/a\134`:     `/a\`,
		`/a\`:        `/a\`,
		`/a\04`:      `/a\04`,
		`/a\999`:     `/a\999`,
		`/a\400`:     `/a\400`, // > 255: not an escape the kernel writes
		"/plain":     "/plain",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzPluginIDFromMountinfo(f *testing.F) {
	f.Add([]byte(pluginMountinfo))
	f.Add([]byte(engine2Mountinfo))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ok := pluginIDFromMountinfo(b)
		if ok != (id != "") || ok && !isPluginID(id) {
			t.Fatalf("%q, %v", id, ok)
		}
	})
}
