package overlay

// WithoutKernelEvents makes m follow no kernel events: unit tests that
// count reconciles run in a namespace other tests change too, and any
// event there would add reconciles they do not expect.
func WithoutKernelEvents(m *Manager) *Manager {
	m.kernelOff = true
	return m
}
