package sandbox

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestUsernsMappingsValidation: the UsernsOptions critest and containerd
// refuse are InvalidArgument; NODE and no options mean the host's.
func TestUsernsMappingsValidation(t *testing.T) {
	one := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1000, Length: 100000}}
	pod := func(u *runtimeapi.UserNamespace) *runtimeapi.NamespaceOption {
		return &runtimeapi.NamespaceOption{UsernsOptions: u}
	}
	for _, tc := range []struct {
		name string
		ns   *runtimeapi.NamespaceOption
		ok   bool
		user bool
	}{
		{"none", &runtimeapi.NamespaceOption{}, true, false},
		{"node", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}), true, false},
		{"pod", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one, Gids: one}), true, true},
		{"node with mappings", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: one, Gids: one}), false, false},
		{"pod without mappings", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}), false, false},
		{"pod without gids", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one}), false, false},
		{"two mappings", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: append(one, &runtimeapi.IDMapping{ContainerId: 0, HostId: 2000, Length: 100000}), Gids: one}), false, false},
		{"root unmapped", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 1000, Length: 100000}}, Gids: one}), false, false},
		{"zero length", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1000}}, Gids: one}), false, false},
		{"overflow", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1 << 31, Length: 1 << 31}}, Gids: one}), false, false},
		{"container", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}), false, false},
		{"target", pod(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}), false, false},
		{"host network", &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE,
			UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one, Gids: one}}, false, false},
		{"host ipc", &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE,
			UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one, Gids: one}}, false, false},
		{"host pid", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE,
			UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one, Gids: one}}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uids, gids, err := usernsMappings(tc.ns)
			if !tc.ok {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("got %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(uids) == 1 && len(gids) == 1; got != tc.user {
				t.Fatalf("user namespace %v, want %v (%v %v)", got, tc.user, uids, gids)
			}
		})
	}
}
