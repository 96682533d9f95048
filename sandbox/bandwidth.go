package sandbox

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/cni"
)

// Pod annotations kubelet's bandwidth shaping uses (the CNI bandwidth
// capability); values are Kubernetes quantities in bits per second.
const (
	annotationIngressBandwidth = "kubernetes.io/ingress-bandwidth"
	annotationEgressBandwidth  = "kubernetes.io/egress-bandwidth"
)

// bandwidthFromAnnotations returns the bandwidth capability, or nil when the
// pod asks for no shaping. Bursts are unlimited, as in containerd and CRI-O.
func bandwidthFromAnnotations(ann map[string]string) (*cni.Bandwidth, error) {
	in, hasIn := ann[annotationIngressBandwidth]
	out, hasOut := ann[annotationEgressBandwidth]
	if !hasIn && !hasOut {
		return nil, nil
	}
	bw := &cni.Bandwidth{}
	if hasIn {
		v, err := parseQuantity(in)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", annotationIngressBandwidth, err)
		}
		bw.IngressRate, bw.IngressBurst = v, math.MaxUint32
	}
	if hasOut {
		v, err := parseQuantity(out)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", annotationEgressBandwidth, err)
		}
		bw.EgressRate, bw.EgressBurst = v, math.MaxUint32
	}
	return bw, nil
}

// parseQuantity parses the integer forms of a Kubernetes quantity ("10M",
// "1Gi", "500k", "1000").
func parseQuantity(s string) (uint64, error) {
	suffixes := []struct {
		s string
		m uint64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	}
	mult := uint64(1)
	num := strings.TrimSpace(s)
	for _, sf := range suffixes {
		if strings.HasSuffix(num, sf.s) {
			num, mult = strings.TrimSuffix(num, sf.s), sf.m
			break
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v == 0 || v > math.MaxUint64/mult {
		return 0, fmt.Errorf("%q is not a positive quantity: %w", s, errdefs.ErrInvalidArgument)
	}
	return v * mult, nil
}
