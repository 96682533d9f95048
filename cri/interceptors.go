package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UnaryInterceptor is the one chokepoint every unary RPC passes: readiness,
// panic recovery, error mapping and the per-request log line.
func (s *Server) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	reqID := newRequestID()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in CRI handler", "method", info.FullMethod, "request", reqID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s (request %s)", path.Base(info.FullMethod), reqID)
		}
		s.logRequest(ctx, info.FullMethod, reqID, objectID(req), start, err)
	}()
	if !s.ready.Load() {
		return nil, status.Error(codes.Unavailable, "berth is recovering its state; retry shortly")
	}
	resp, err = handler(ctx, req)
	return resp, toStatus(err)
}

// StreamInterceptor does for streaming RPCs what UnaryInterceptor does.
func (s *Server) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	reqID := newRequestID()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in CRI stream handler", "method", info.FullMethod, "request", reqID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "internal error in %s (request %s)", path.Base(info.FullMethod), reqID)
		}
		s.logRequest(ss.Context(), info.FullMethod, reqID, "", start, err)
	}()
	if !s.ready.Load() {
		return status.Error(codes.Unavailable, "berth is recovering its state; retry shortly")
	}
	return toStatus(handler(srv, ss))
}

func (s *Server) logRequest(ctx context.Context, method, reqID, id string, start time.Time, err error) {
	attrs := []slog.Attr{
		slog.String("method", path.Base(method)),
		slog.String("request", reqID),
		slog.Duration("duration", time.Since(start)),
	}
	if id != "" {
		attrs = append(attrs, slog.String("id", id))
	}
	if err == nil {
		s.log.LogAttrs(ctx, slog.LevelDebug, "CRI request", attrs...)
		return
	}
	st, _ := status.FromError(err)
	attrs = append(attrs, slog.String("code", st.Code().String()), slog.String("error", st.Message()))
	level := slog.LevelWarn
	switch st.Code() {
	case codes.Unknown, codes.Internal, codes.DataLoss:
		level = slog.LevelError
	}
	s.log.LogAttrs(ctx, level, "CRI request failed", attrs...)
}

// objectID picks the object a request is about, for the log line.
func objectID(req any) string {
	switch r := req.(type) {
	case interface{ GetContainerId() string }:
		return r.GetContainerId()
	case interface{ GetPodSandboxId() string }:
		return r.GetPodSandboxId()
	case interface{ GetImage() *runtimeapi.ImageSpec }:
		return r.GetImage().GetImage()
	}
	return ""
}

func newRequestID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
