package wireguard

// SetKernelLink replaces how b creates a kernel WireGuard device, to play
// kernels with and without the module.
func SetKernelLink(b *Backend, f func(name string, mtu int) error) { b.addKernelLink = f }
