import CShim
import Dispatch
import Glibc
import Synchronization

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
/// out once and never reused: a session gets a namespace no process has been in. Taking one starts a
/// refill in the background, a moment later while spares remain: making a namespace keeps a CPU busy for
/// about a millisecond, which on a small host would otherwise slow the very start it was taken for. When
/// none is spare (a burst of starts), one is made on the spot.
public final class NetworkNamespacePool: Sendable {
    private struct State {
        var spares: [NetworkNamespace] = []
        var refilling = false
    }

    private let state = Mutex(State())
    private let target: Int
    private let queue = DispatchQueue(label: "netns-pool", qos: .utility)

    /// `spares`: how many to keep made (0: make each on demand).
    public init(spares: Int) {
        target = max(0, spares)
        refill()
    }

    /// A namespace no process has used, or nil (errno set) if none can be made.
    public func take() -> NetworkNamespace? {
        let (spare, left): (NetworkNamespace?, Int) = state.withLock { s in (s.spares.popLast(), s.spares.count) }
        refill(after: left > 0 ? NetworkNamespacePool.refillDelay : 0)
        return spare ?? NetworkNamespace()
    }

    /// How long a refill waits while spares remain.
    static let refillDelay = 0.2

    /// How many are ready now (tests).
    public var spareCount: Int { state.withLock { $0.spares.count } }

    private func refill(after delay: Double = 0) {
        let start: Bool = state.withLock { s in
            guard !s.refilling, s.spares.count < target else { return false }
            s.refilling = true
            return true
        }
        guard start else { return }
        queue.asyncAfter(deadline: .now() + delay) { [self] in
            while true {
                let made = NetworkNamespace()
                let more: Bool = state.withLock { s in
                    if let made { s.spares.append(made) }
                    let more = made != nil && s.spares.count < target
                    if !more { s.refilling = false }
                    return more
                }
                if !more { return }
            }
        }
    }
}
