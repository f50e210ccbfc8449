// Package names makes container names resolve across hosts (issue 11).
//
// Docker's embedded resolver (127.0.0.11 in each container) answers the
// names of its own host and forwards the rest to the servers in daemon.json
// "dns", from the container's network namespace. With that set to felt's
// address (169.254.53.53, FELT_DNS) on every host, and the driver's Join
// routing that address through the felt bridge, the query reaches felt from
// the container's felt address, so felt knows which networks it may see.
//
// Files: publish.go learns this host's container names from Docker and
// writes them to the shared store (lease.Registry's dns/ records);
// index.go watches every host's records and leases and keeps an immutable
// lookup table; scope.go maps a query's source to its networks; server.go
// answers DNS (github.com/miekg/dns) and forwards the rest; upstream.go
// the resolvers forwarded to; address.go felt's address on lo.
package names
