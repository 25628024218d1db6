package harness

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// childEnv makes the test binary a second reserving process (TestMain).
const childEnv = "HARNESS_PORTS_CHILD"

// childPorts is how many ports the child reserves: more than a block, so
// it holds two.
const childPorts = portBlockSize + 1

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(reservingChild())
	}
	goleak.VerifyTestMain(m)
}

// reservingChild reserves childPorts ports, prints them one a line, then
// holds them until its stdin closes.
func reservingChild() int {
	addrs, err := ReserveAddrs(childPorts)
	if err != nil {
		_, _ = os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	_, _ = os.Stdout.WriteString(strings.Join(addrs, "\n") + "\n")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestReservedPortsAreOutsideTheEphemeralRangeAndFree(t *testing.T) {
	lo, hi := ephemeralRange()
	addrs := Addrs(t, 2*portBlockSize+3) // spans three blocks
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		if p := portOf(t, a); p >= lo && p <= hi || p < portLow {
			t.Errorf("%s: port in the ephemeral range %d-%d or below %d", a, lo, hi, portLow)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("%s is not free: %v", a, err)
			continue
		}
		_ = ln.Close()
	}
}

// TestReservedBlocksExcludeOtherProcesses runs a second process that
// reserves ports and keeps them; this one's ports never fall in its
// blocks, and those blocks' lock files are held.
func TestReservedBlocksExcludeOtherProcesses(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	childBlocks := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	for range childPorts {
		if !sc.Scan() {
			t.Fatalf("child reserved fewer than %d ports: %v", childPorts, sc.Err())
		}
		childBlocks[blockOf(portOf(t, sc.Text()))] = true
	}
	for _, a := range Addrs(t, 2*portBlockSize) {
		if b := blockOf(portOf(t, a)); childBlocks[b] {
			t.Errorf("%s is in block %d, which the other process holds", a, b)
		}
	}
	for b := range childBlocks {
		f, err := os.OpenFile(filepath.Join(portLockDir, strconv.Itoa(b)+".lock"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		_ = f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Errorf("block %d's lock file is not held by the other process: flock gave %v", b, err)
		}
	}
}

// blockOf is the first port of port's block.
func blockOf(port int) int { return portLow + (port-portLow)/portBlockSize*portBlockSize }
