import CShim
import Glibc

/// A network namespace held open by descriptor: ChimeraX's REST server listens on its loopback, which no
/// other process on the host can reach. The supervisor connects through a socket created inside it
/// (`cshim_socket_in_netns`: the calling thread enters the namespace for the `socket()` call and returns).
public final class NetworkNamespace: Sendable {
    public let fd: Int32

    /// A new namespace with only its loopback interface, up (made on a short-lived thread); nil with errno
    /// set if the host does not allow it.
    public init?() {
        let fd = cshim_netns_create()
        guard fd >= 0 else {
            errno = -fd
            return nil
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// A TCP socket inside the namespace, or -1 (errno set).
    public func tcpSocket() -> Int32 {
        let s = cshim_socket_in_netns(fd, AF_INET, Int32(SOCK_STREAM.rawValue))
        if s < 0 {
            errno = -s
            return -1
        }
        return s
    }

    /// Whether this host lets the daemon make network namespaces (checked once).
    public static let available: Bool = cshim_netns_available() == 1
}

/// A few fresh network namespaces made ahead of need, so that a session start does not wait for the
/// kernel to build one (about half a millisecond, more while another is being torn down). Each is handed
/// out once and never reused: a session gets a namespace no process has been in. The refill waits a moment
/// while spares remain (see `Spares`): making a namespace keeps a CPU busy for about a millisecond, which on
/// a small host would otherwise slow the very start it was taken for.
public final class NetworkNamespacePool: Sendable {
    private let spares: Spares<NetworkNamespace>

    /// `spares`: how many to keep made (0: make each on demand).
    public init(spares: Int) {
        self.spares = Spares(label: "netns-pool", target: spares) { NetworkNamespace() }
    }

    /// A namespace no process has used, or nil (errno set) if none can be made.
    public func take() -> NetworkNamespace? { spares.take() ?? NetworkNamespace() }

    /// How many are ready now (tests).
    public var spareCount: Int { spares.count }
}
