package sandbox

import (
	"reflect"
	"testing"
)

// TestParseNetDev reads every counter the stats and metrics report, and
// skips loopback.
func TestParseNetDev(t *testing.T) {
	data := []byte(`Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    2000      20    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
`)
	got, err := parseNetDev(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []InterfaceStats{{
		Name: "eth0", RxBytes: 2000, RxPackets: 20, RxErrors: 1, RxDropped: 2,
		TxBytes: 3000, TxPackets: 30, TxErrors: 3, TxDropped: 4,
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
