package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listenIn starts a TCP server inside netns that answers each connection
// with reply and closes. The socket belongs to the namespace it was created
// in, so accepting can happen on any thread.
func listenIn(t *testing.T, netns, addr, reply string) net.Listener {
	t.Helper()
	var l net.Listener
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", netns, err)
	}
	t.Cleanup(func() { l.Close() })
	go serve(l, reply)
	return l
}

func serve(l net.Listener, reply string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, reply)
		c.Close()
	}
}

// fetch dials addr (from netns, or the host when netns is "") and returns
// what the server says.
func fetch(netns, addr string) (string, error) {
	var got string
	do := func() error {
		var lastErr error
		// portmap's rules may take a moment to apply.
		for range 20 {
			c, err := net.DialTimeout("tcp4", addr, time.Second)
			if err != nil {
				lastErr = err
				time.Sleep(100 * time.Millisecond)
				continue
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(c)
			got = string(b)
			return err
		}
		return lastErr
	}
	if netns == "" {
		return got, do()
	}
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error { return do() })
	return got, err
}

// hostAddr returns a global IPv4 address of the host outside the test
// bridge, to check host ports on the node's own address.
func hostAddr(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 || strings.HasPrefix(i.Name, "berth") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	t.Skip("no global IPv4 address on the host")
	return ""
}

// Item 4: two pods on the bridge reach each other, a pod reaches the host,
// and a host port reaches the pod from 127.0.0.1 and the host's address.
func TestPodTraffic(t *testing.T) {
	e := newEnv(t)
	a := e.run(podConfig("web"))
	cfgB := podConfig("client")
	cfgB.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: 18080}}
	b := e.run(cfgB)

	listenIn(t, a.NetNS, ":8080", "hello from a")
	listenIn(t, b.NetNS, ":8080", "hello from b")

	t.Run("pod to pod", func(t *testing.T) {
		got, err := fetch(b.NetNS, a.IPs[0]+":8080")
		if err != nil || got != "hello from a" {
			t.Fatalf("b → a = %q, %v", got, err)
		}
		got, err = fetch(a.NetNS, b.IPs[0]+":8080")
		if err != nil || got != "hello from b" {
			t.Fatalf("a → b = %q, %v", got, err)
		}
	})
	t.Run("pod to host", func(t *testing.T) {
		host := hostAddr(t)
		var l net.Listener
		l, err := net.Listen("tcp4", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go serve(l, "hello from the host")
		for _, addr := range []string{l.Addr().String(), fmt.Sprintf("%s:%d", testGateway, l.Addr().(*net.TCPAddr).Port)} {
			if addr[:len(testGateway)] == testGateway {
				// The gateway address is the host too; listen there as well.
				gl, err := net.Listen("tcp4", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer gl.Close()
				go serve(gl, "hello from the host")
			}
			got, err := fetch(a.NetNS, addr)
			if err != nil || got != "hello from the host" {
				t.Errorf("pod → host %s = %q, %v", addr, got, err)
			}
		}
	})
	t.Run("host port", func(t *testing.T) {
		for _, addr := range []string{"127.0.0.1:18080", hostAddr(t) + ":18080"} {
			got, err := fetch("", addr)
			if err != nil || got != "hello from b" {
				t.Errorf("host → %s = %q, %v", addr, got, err)
			}
		}
	})

	// After the pod stops, its host port is gone.
	if err := e.mgr.Stop(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp4", "127.0.0.1:18080", 500*time.Millisecond); err == nil {
		c.Close()
		t.Error("host port still open after stop")
	}
}

// Item 6: pod stats report cgroup usage and the pod's interface counters.
func TestStats(t *testing.T) {
	e := newEnv(t)
	a := e.run(podConfig("stats-a"))
	b := e.run(podConfig("stats-b"))
	listenIn(t, a.NetNS, ":8080", strings.Repeat("x", 100000))
	if got, err := fetch(b.NetNS, a.IPs[0]+":8080"); err != nil || len(got) != 100000 {
		t.Fatalf("fetch: %d bytes, %v", len(got), err)
	}
	st, err := e.mgr.Stats(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.HasCgroup {
		t.Error("no cgroup stats")
	}
	var eth0 *InterfaceStats
	for i := range st.Interfaces {
		if st.Interfaces[i].Name == "eth0" {
			eth0 = &st.Interfaces[i]
		}
	}
	if eth0 == nil || eth0.TxBytes < 100000 || eth0.RxBytes == 0 {
		t.Errorf("eth0 stats = %+v (interfaces %+v)", eth0, st.Interfaces)
	}
}
