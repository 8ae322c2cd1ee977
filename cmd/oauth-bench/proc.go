package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memInfo is a process's resident memory from /proc/<pid>/status, in KiB.
type memInfo struct {
	pid    int
	hwmKiB int64 // VmHWM: the peak resident set since the process started
	rssKiB int64 // VmRSS: the resident set now
}

func readMem(pid int) (memInfo, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	defer f.Close() //nolint:errcheck // read-only: closing it cannot lose anything
	m := memInfo{pid: pid}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		switch key {
		case "VmHWM":
			m.hwmKiB = n
		case "VmRSS":
			m.rssKiB = n
		}
	}
	return m, sc.Err()
}

// pluginPID finds the plugin process among the children of the Vault server: other Vault
// servers on the machine may run the same plugin, so a match by name alone is not enough.
func pluginPID(vaultPID int, binary string) (int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, dir := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if parentPID(pid) != vaultPID {
			continue
		}
		cmd, err := os.ReadFile(dir + "/cmdline")
		if err == nil && bytes.Contains(cmd, []byte(binary)) {
			found = append(found, pid)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("no %s process under Vault (pid %d)", binary, vaultPID)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("%d %s processes under Vault (pid %d): %v", len(found), binary, vaultPID, found)
}

// parentPID reads the PPid of a process (0 when it is gone).
func parentPID(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: the fields after it are plain.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}
