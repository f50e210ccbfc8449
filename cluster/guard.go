package cluster

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrInHandler is the answer of every Engine method called with a context
// InHandler marked. dockerd calls felt's handlers while holding its own
// locks; a handler that waits on dockerd there deadlocks it (the failure of
// docker-net-dhcp#23 and calico libnetwork-plugin#49). Handlers write local
// state and kick the sync loop instead; only the loop calls Docker.
var ErrInHandler = errors.New("Docker API call from a plugin handler")

// handlerKey marks a context as a plugin handler's.
type handlerKey struct{}

// InHandler marks ctx as the context of a plugin handler (plugin/server.go
// marks every one), so that any Docker API call made with it, however deep,
// is refused instead of deadlocking dockerd.
func InHandler(ctx context.Context) context.Context {
	return context.WithValue(ctx, handlerKey{}, true)
}

// inHandler reports whether ctx, or a context derived from it, was marked.
func inHandler(ctx context.Context) bool {
	v, _ := ctx.Value(handlerKey{}).(bool)
	return v
}

// refuse returns ErrInHandler, and logs where the call came from, when ctx
// is a handler's. Reaching it is a felt bug, so the log carries the stack.
func (e *dockerEngine) refuse(ctx context.Context, call string) error {
	if !inHandler(ctx) {
		return nil
	}
	e.log.Error("Docker API call from a plugin handler refused: a felt bug (it could deadlock dockerd)", "call", call, "stack", string(debug.Stack()))
	return fmt.Errorf("%s: %w", call, ErrInHandler)
}
