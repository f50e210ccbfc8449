package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/felt-net/felt/testkit/hosts"
)

// userHZ is the unit of the times in /proc/stat and /proc/PID/stat. The
// kernel reports them in USER_HZ, which is 100 on every architecture Linux
// exposes to user space (the tick rate inside the kernel may differ).
const userHZ = 100

// systemBusy is the CPU time all CPUs spent not idle since boot, in seconds:
// user, nice, system, irq, softirq and steal of the "cpu" line (guest time
// is already inside user). Packet processing in softirq counts, which is
// where most of the kernel data paths' cost lands.
func systemBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("reading /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	busy := 0.0
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat field %d: %w", i, err)
		}
		busy += v
	}
	return busy / userHZ, nil
}

// procCPU is the user+system CPU time of one process, in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces: count fields after its ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // field 14, utime
	st, err2 := strconv.ParseFloat(f[12], 64) // field 15, stime
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return (ut + st) / userHZ, nil
}

// procsCPU sums procCPU over pids (the felt daemons of all hosts).
func procsCPU(pids []int) (float64, error) {
	sum := 0.0
	for _, p := range pids {
		c, err := procCPU(p)
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

// vmRSS is the resident set of a process in KiB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				return 0, fmt.Errorf("pid %d VmRSS %q: %w", pid, v, err)
			}
			return kb, nil
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// feltPID finds the felt daemon of h. The harness keeps its process
// private; felt's environment names h's socket, which no other process has.
// (`ip netns exec` execs felt, so the daemon is that process itself.)
func feltPID(h *hosts.Host) (int, error) {
	want := []byte("FELT_SOCKET=" + h.Sock + "\x00")
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		env, err := os.ReadFile(d + "/environ")
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		if exe, err := os.Readlink(d + "/exe"); err == nil && filepath.Base(exe) == filepath.Base(h.Binary) {
			return strconv.Atoi(filepath.Base(d))
		}
	}
	return 0, fmt.Errorf("felt process of host %s (socket %s) not found in /proc", h.NS, h.Sock)
}

func feltPIDs(hosts []*hosts.Host) ([]int, error) {
	var pids []int
	for _, h := range hosts {
		p, err := feltPID(h)
		if err != nil {
			return nil, err
		}
		pids = append(pids, p)
	}
	return pids, nil
}
