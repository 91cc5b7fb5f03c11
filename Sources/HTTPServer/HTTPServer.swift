import CShim
import Foundation
import Glibc
import Synchronization

/// The HTTP/1.1 server: N event loops, each accepting from every listener (EPOLLEXCLUSIVE wakes one) and
/// owning the connections it accepted.
public final class HTTPServer: @unchecked Sendable {
    // @unchecked Sendable: the mutable per-loop state lives in `contexts[i]` and is touched only on loop i;
    // the rest is immutable or atomic.
    public let configuration: ServerConfiguration
    public let router: Router
    public let loops: [EventLoop]
    public let listeners: [Listener]
    let observer: any HTTPServerObserver
    private var contexts: [LoopContext] = []
    public let openConnections = Atomic<Int>(0)
    public let acceptedTotal = Atomic<Int>(0)
    private let drainingFlag = Atomic<Bool>(false)
    private let requestPrefix: String
    /// The configured default headers, serialised once (`Name: value\r\n`), CR and LF removed.
    let defaultHeaderBytes: [(name: String, line: [UInt8])]
    /// All of them in one block, for the usual response that sets none of them itself.
    let defaultHeaderBlock: [UInt8]

    var draining: Bool { drainingFlag.load(ordering: .relaxed) }

    public init(configuration: ServerConfiguration, router: Router, listeners: [Listener], observer: any HTTPServerObserver) throws(SystemCallError) {
        self.configuration = configuration
        self.router = router
        self.listeners = listeners
        self.observer = observer
        defaultHeaderBytes = configuration.defaultHeaders.map { n, v in
            var line: [UInt8] = []
            appendFieldPart(&line, n)
            line.append(contentsOf: ": ".utf8)
            appendFieldPart(&line, v)
            line.append(contentsOf: "\r\n".utf8)
            return (n, line)
        }
        defaultHeaderBlock = defaultHeaderBytes.flatMap(\.line)
        var ls: [EventLoop] = []
        for i in 0..<max(1, configuration.eventLoops) { ls.append(try EventLoop(index: i)) }
        loops = ls
        var seed: UInt64 = 0
        _ = cshim_getrandom(&seed, 8)
        requestPrefix = String(seed & 0xFFFF_FFFF, radix: 16)
        for loop in loops { contexts.append(LoopContext(loop: loop)) }
    }

    /// Starts loops 1..n-1 on their own threads and registers the acceptors; loop 0 is run by the caller
    /// (`loops[0].run()`), which also receives signals.
    public func start() {
        for (i, loop) in loops.enumerated() {
            let ctx = UncheckedBox(contexts[i])
            if i == 0 {
                ctx.value.startAccepting(server: self)
            } else {
                loop.execute { [self] in ctx.value.startAccepting(server: self) }
                let t = UncheckedBox(loop)
                let thread = Thread { t.value.run() }
                thread.name = "http-loop-\(i)"
                thread.start()
            }
        }
    }

    /// Stops accepting, closes idle connections, lets requests in flight finish; calls `completion` on
    /// loop 0 when every connection is gone or `timeout` has passed (then the rest are cut).
    public func drain(timeout: Double, completion: @escaping @Sendable () -> Void) {
        drainingFlag.store(true, ordering: .relaxed)
        for (i, loop) in loops.enumerated() {
            let ctx = UncheckedBox(contexts[i])
            loop.execute { ctx.value.beginDrain() }
        }
        let deadline = monotonicNanos() + nanos(seconds: timeout)
        let loop0 = loops[0]
        loop0.execute { [self] in
            var handle: TimerHandle?
            handle = loop0.scheduleRepeating(every: 0.02) { [self] in
                let open = openConnections.load(ordering: .relaxed)
                if open == 0 || monotonicNanos() >= deadline {
                    handle?.cancel()
                    if open > 0 {
                        log(.warning, "drain timeout: closing connections with requests in flight", ["connections": "\(open)"])
                        for (i, l) in loops.enumerated() {
                            let ctx = UncheckedBox(contexts[i])
                            l.execute { ctx.value.closeAll() }
                        }
                    }
                    for l in listeners { l.close() }
                    completion()
                }
            }
        }
    }

    /// Stops every loop thread (after drain).
    public func stopLoops() {
        for loop in loops { loop.execute { loop.stop() } }
    }

    // MARK: For connections

    func requestID(from header: String?, loop: EventLoop) -> String {
        if let h = header, !h.isEmpty, h.utf8.count <= 128,
            h.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
        {
            return h
        }
        // Numbered per loop (loop i issues i, i + n, i + 2n...): one shared atomic counter was a cache line
        // bounced between the loops on every request.
        loop.requestsNumbered &+= 1
        let n = loop.requestsNumbered &* UInt64(loops.count) &+ UInt64(loop.index)
        return requestPrefix + "-" + String(n, radix: 16)
    }

    /// Whether `name` is one of the configured default headers (a response that sets it replaces the default).
    func isDefaultHeader(_ name: String) -> Bool {
        for d in defaultHeaderBytes where asciiCaseInsensitiveEquals(d.name, name) { return true }
        return false
    }

    func requestCompleted(route: String?, method: HTTPMethod, status: Int, nanos: UInt64) {
        observer.requestCompleted(route: route, method: method, status: status, nanos: nanos)
    }

    func log(_ level: LogLevel, _ message: String, _ fields: [String: String] = [:]) {
        observer.log(level, message, fields)
    }

    func connectionClosed(_ c: Connection) {
        openConnections.wrappingSubtract(1, ordering: .relaxed)
        c.loop.connectionCount.wrappingSubtract(1, ordering: .relaxed)
        contexts[c.loop.index].remove(c)
    }

    /// The loop a new connection accepted on `accepting` should live on: that one unless another owns fewer
    /// connections. Whichever loop wakes first accepts (EPOLLEXCLUSIVE), and under load the same loop kept
    /// winning: all 64 connections of a benchmark were seen on one of two loops. The choice is counted at once,
    /// so a burst of accepts spreads out.
    func assignLoop(acceptedOn accepting: EventLoop) -> EventLoop {
        var best = accepting
        var bestCount = accepting.connectionCount.load(ordering: .relaxed)
        for l in loops where l !== accepting {
            let n = l.connectionCount.load(ordering: .relaxed)
            if n < bestCount {
                best = l
                bestCount = n
            }
        }
        best.connectionCount.wrappingAdd(1, ordering: .relaxed)
        return best
    }

    func connectionOpened(_ c: Connection) {
        openConnections.wrappingAdd(1, ordering: .relaxed)
        acceptedTotal.wrappingAdd(1, ordering: .relaxed)
        contexts[c.loop.index].add(c)
    }
}

@inline(__always)
private func isAlnum(_ b: UInt8) -> Bool {
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
}

/// Per-loop state: the acceptors and the open connections (for drain).
final class LoopContext {
    // unowned(unsafe): the server owns both its loops and their contexts, for the life of the server.
    unowned(unsafe) let loop: EventLoop
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var acceptors: [Acceptor] = []
    private var draining = false

    init(loop: EventLoop) { self.loop = loop }

    func startAccepting(server: HTTPServer) {
        for l in server.listeners {
            let a = Acceptor(listener: l, loop: loop, server: server)
            acceptors.append(a)
            a.enable()
        }
    }

    func add(_ c: Connection) { connections[ObjectIdentifier(c)] = c }
    func remove(_ c: Connection) { connections[ObjectIdentifier(c)] = nil }

    func beginDrain() {
        draining = true
        for a in acceptors { a.disable(permanently: true) }
        for c in Array(connections.values) { c.beginDrain() }
    }

    func closeAll() {
        for c in Array(connections.values) { c.close() }
    }
}

/// Accepts on one listener for one loop. Backs off (instead of spinning) on EMFILE/ENFILE and when the
/// connection limit is reached.
final class Acceptor: EventHandler {
    let listener: Listener
    // unowned(unsafe): acceptors belong to their loop's context, which the server owns (see LoopContext).
    unowned(unsafe) let loop: EventLoop
    unowned(unsafe) let server: HTTPServer
    private var enabled = false
    private var stopped = false
    private var lastWarning: UInt64 = 0

    init(listener: Listener, loop: EventLoop, server: HTTPServer) {
        self.listener = listener
        self.loop = loop
        self.server = server
    }

    func enable() {
        if enabled || stopped { return }
        enabled = true
        loop.register(listener.fd, events: CSHIM_EPOLLIN | CSHIM_EPOLLEXCLUSIVE, handler: self)
    }

    func disable(permanently: Bool = false) {
        if permanently { stopped = true }
        if !enabled { return }
        enabled = false
        loop.unregister(listener.fd)
    }

    private func backOff(_ reason: String, _ fields: [String: String]) {
        disable()
        if loop.now &- lastWarning > 10_000_000_000 {
            lastWarning = loop.now
            server.log(.warning, reason, fields)
        }
        loop.schedule(after: 0.05) { [weak self] in self?.enable() }
    }

    /// Makes the connection of an accepted descriptor on `loop`. On that loop's thread.
    static func open(_ fd: Int32, on loop: EventLoop, server: HTTPServer, peer: Peer, listenerKind: String) {
        if server.draining {
            // Handed over while the server began to drain: this loop's drain has already run.
            closeDescriptor(fd)
            loop.connectionCount.wrappingSubtract(1, ordering: .relaxed)
            return
        }
        let c = Connection(fd: fd, loop: loop, server: server, peer: peer, listenerKind: listenerKind)
        server.connectionOpened(c)
        loop.register(fd, events: CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP, handler: c)
    }

    func handleEvent(_ events: UInt32) {
        for _ in 0..<64 {
            if server.openConnections.load(ordering: .relaxed) >= server.configuration.maxConnections {
                backOff("connection limit reached; not accepting for now", ["limit": "\(server.configuration.maxConnections)"])
                return
            }
            var ss = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { cshim_accept(listener.fd, $0, &len) }
            }
            if fd < 0 {
                let e = errno
                switch e {
                case EAGAIN, EINTR, ECONNABORTED, EPROTO:
                    if e == EAGAIN { return }
                    continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    backOff("accept failed: out of descriptors or memory; pausing accept", ["errno": "\(e)"])
                    return
                default:
                    backOff("accept failed", ["errno": "\(e)"])
                    return
                }
            }
            let peer: Peer
            if listener.kind == "unix" {
                var pid: Int32 = 0
                var uid: UInt32 = UInt32.max
                var gid: UInt32 = UInt32.max
                _ = cshim_peercred(fd, &pid, &uid, &gid)
                peer = .unix(pid: pid, uid: uid, gid: gid)
            } else {
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                let (addr, port) = Listener.describe(&ss)
                peer = .tcp(address: addr, port: port)
            }
            let target = server.assignLoop(acceptedOn: loop)
            if target === loop {
                Acceptor.open(fd, on: loop, server: server, peer: peer, listenerKind: listener.kind)
            } else {
                let (s, kind) = (UncheckedBox(server), listener.kind)
                target.execute { Acceptor.open(fd, on: target, server: s.value, peer: peer, listenerKind: kind) }
            }
        }
    }
}
