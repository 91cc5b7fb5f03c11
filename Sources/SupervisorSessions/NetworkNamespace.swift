import CShim
import Glibc

/// A network namespace held open by descriptor: ChimeraX's REST server listens on its loopback, which no
/// other process on the host can reach. The supervisor connects through a socket created inside it
/// (`cshim_socket_in_netns`: on a short-lived thread, so no thread of the daemon changes namespace).
public final class NetworkNamespace: Sendable {
    public let fd: Int32

    /// The namespace of a live process (`/proc/PID/ns/net`); nil if it cannot be opened.
    public init?(pid: pid_t) {
        let fd = open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
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

    /// Whether this host lets the daemon make network namespaces (checked once, in a child).
    public static let available: Bool = cshim_netns_available() == 1
}
