package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// pluginsDir is where Docker mounts its plugin socket directory into a
// managed plugin: a bind of <exec-root>/plugins/<plugin ID>.
const pluginsDir = "/run/docker/plugins"

// mountinfoPath holds this process's mounts.
const mountinfoPath = "/proc/self/mountinfo"

// self finds this plugin's name as Docker knows it, which is the driver name
// libnetwork registered it under and the one its networks carry: the
// override (FELT_DRIVER_NAME) if set; else, in a managed plugin, the name
// Docker gives the plugin ID found in our own mounts ("felt:latest", or the
// alias it was installed as); else the bare binary's fallback (its socket's
// basename). Docker passes a managed plugin no identifying variable, so the
// mount is the only trace of who we are.
func (e *dockerEngine) self(ctx context.Context, c *conn) (string, error) {
	if e.cfg.DriverName != "" {
		return e.cfg.DriverName, nil
	}
	info, err := e.mountinfo()
	if err != nil && e.cfg.FallbackName == "" {
		return "", fmt.Errorf("finding this plugin's name: reading %s: %w (set FELT_DRIVER_NAME to the plugin's name, e.g. felt:latest)", mountinfoPath, err)
	}
	id, ok := pluginIDFromMountinfo(info)
	if !ok {
		if e.cfg.FallbackName == "" {
			return "", fmt.Errorf("finding this plugin's name: nothing is mounted at %s with a plugin ID, so this is not a managed plugin; set FELT_DRIVER_NAME", pluginsDir)
		}
		e.log.Debug("no managed-plugin mount: using the bare binary's driver name", "name", e.cfg.FallbackName)
		return e.cfg.FallbackName, nil
	}
	cctx, cancel := context.WithTimeout(ctx, e.short)
	defer cancel()
	res, err := c.cli.PluginInspect(cctx, id, client.PluginInspectOptions{})
	if err != nil {
		e.lost(ctx, c, err)
		if cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("finding this plugin's name: the Docker engine at %s has no plugin %s (the ID in %s): FELT_DOCKER_HOST must be the engine that runs this plugin, or set FELT_DRIVER_NAME: %w", e.cfg.Host, id[:12], mountinfoPath, err)
		}
		return "", fmt.Errorf("finding this plugin's name: inspecting plugin %s at %s: %w", id[:12], e.cfg.Host, err)
	}
	if res.Plugin.Name == "" {
		return "", fmt.Errorf("finding this plugin's name: Docker at %s shows plugin %s without a name; set FELT_DRIVER_NAME", e.cfg.Host, id[:12])
	}
	e.log.Info("this plugin's name in Docker", "name", res.Plugin.Name, "id", id[:12])
	return res.Plugin.Name, nil
}

// readMountinfo is how a dockerEngine reads its mounts (tests replace it).
func readMountinfo() ([]byte, error) { return os.ReadFile(mountinfoPath) }

// pluginIDFromMountinfo finds the managed plugin's ID in a mountinfo table
// (proc(5)): the mount at /run/docker/plugins whose root, the path inside
// its file system, ends in /plugins/<64 hex> — /docker/plugins/<id> on a
// host, /felt-NS/plugins/<id> under scripts/engine2.sh. If several match,
// the last wins: it is the one on top. Lines that do not parse are skipped.
func pluginIDFromMountinfo(info []byte) (string, bool) {
	var id string
	for line := range bytes.SplitSeq(info, []byte("\n")) {
		// 36 35 98:0 /root /mountpoint rw,noatime master:1 - ext3 /dev/root rw
		f := strings.Fields(string(line))
		if len(f) < 5 {
			continue
		}
		// /var/run is /run in the plugin's rootfs (Debian's symlink), but a
		// rootfs with a real /var/run would show that path.
		if mp := unescapeMountinfo(f[4]); mp != pluginsDir && mp != "/var"+pluginsDir {
			continue
		}
		root := unescapeMountinfo(f[3])
		i := strings.LastIndex(root, "/plugins/")
		if i < 0 {
			continue
		}
		if cand := root[i+len("/plugins/"):]; isPluginID(cand) {
			id = cand
		}
	}
	return id, id != ""
}

// isPluginID reports whether s is a full plugin ID: 64 lowercase hex.
func isPluginID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// unescapeMountinfo undoes the kernel's octal escapes of space, tab,
// newline and backslash (\040, \011, \012, \134) in mountinfo paths.
// Anything else is left as it is.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
