import CShim
import Foundation
import Glibc
import MinHeap
import Synchronization

/// The supervision thread: one epoll set for the ChimeraX processes' pipes and pidfds, and timers. Every
/// session's state is touched only on this thread, so the lifecycle needs no locks.
public final class Reactor: @unchecked Sendable {
    // @unchecked Sendable: `handlers`, `heap`, `bodies` and `nextTimer` are touched only on the reactor thread
    // (`inReactor`); other threads go through `execute`, whose queue is a Mutex.
    private let epfd: Int32
    private let wakeFD: Int32
    private var handlers: [Int32: () -> Void] = [:]
    /// Timers: a binary min-heap on time; cancelling only forgets the body (the entry is skipped when due),
    /// so arming and cancelling are O(log n) and nothing scans every session.
    private struct Due: Comparable {
        let at: Double
        let id: UInt64
        static func < (a: Due, b: Due) -> Bool { (a.at, a.id) < (b.at, b.id) }
    }

    private var heap = MinHeap<Due>()
    private var bodies: [UInt64: () -> Void] = [:]
    private var nextTimer: UInt64 = 0
    private let tasks = Mutex<[@Sendable () -> Void]>([])
    private let threadID = Atomic<Int32>(0)
    private let stopped = Atomic<Bool>(false)

    public init() throws {
        epfd = cshim_epoll_create()
        wakeFD = cshim_eventfd()
        guard epfd >= 0, wakeFD >= 0 else { throw ReactorError(errno: errno) }
        _ = cshim_epoll_ctl(epfd, 1, wakeFD, CSHIM_EPOLLIN, UInt64(UInt32(bitPattern: wakeFD)))
    }

    public struct ReactorError: Error { public let errno: Int32 }

    /// Starts the thread.
    public func start(name: String = "supervision") {
        let t = Thread { [self] in run() }
        t.name = name
        t.start()
    }

    public var inReactor: Bool { threadID.load(ordering: .relaxed) == cshim_gettid() }

    /// Monotonic seconds.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Runs `body` on the reactor thread (soon, in order).
    public func execute(_ body: @escaping @Sendable () -> Void) {
        tasks.withLock { $0.append(body) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Calls `body` whenever `fd` is readable (or hung up). Reactor thread only.
    public func watch(_ fd: Int32, _ body: @escaping () -> Void) { watch(fd, events: CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP, body) }

    /// Calls `body` on `events` (`CSHIM_EPOLLIN`, `CSHIM_EPOLLOUT`…) of `fd`; watching it again changes the
    /// events and the body. Reactor thread only.
    public func watch(_ fd: Int32, events: UInt32, _ body: @escaping () -> Void) {
        precondition(inReactor || threadID.load(ordering: .relaxed) == 0)
        let op: Int32 = handlers[fd] == nil ? 1 : 3
        handlers[fd] = body
        _ = cshim_epoll_ctl(epfd, op, fd, events, UInt64(UInt32(bitPattern: fd)))
    }

    /// Stops watching `fd` (before closing it). Reactor thread only.
    public func unwatch(_ fd: Int32) {
        handlers[fd] = nil
        _ = cshim_epoll_ctl(epfd, 2, fd, 0, 0)
    }

    /// Calls `body` at monotonic time `at`; returns an id for `cancel`. Reactor thread only.
    @discardableResult
    public func schedule(at: Double, _ body: @escaping () -> Void) -> UInt64 {
        nextTimer += 1
        bodies[nextTimer] = body
        heap.push(Due(at: at, id: nextTimer))
        return nextTimer
    }

    public func cancel(_ id: UInt64) { bodies[id] = nil }

    public func stop() {
        stopped.store(true, ordering: .relaxed)
        execute {}
    }

    private func run() {
        threadID.store(cshim_gettid(), ordering: .relaxed)
        var events = [UInt32](repeating: 0, count: 64)
        var data = [UInt64](repeating: 0, count: 64)
        while !stopped.load(ordering: .relaxed) {
            // Cancelled timers at the top are dropped before computing the wait.
            while let top = heap.min, bodies[top.id] == nil { heap.popMin() }
            var timeout: Int32 = -1
            if let first = heap.min {
                timeout = Int32(max(0, min(60_000, (first.at - Reactor.now()) * 1000 + 1)))
            }
            let n = cshim_epoll_wait(epfd, &events, &data, 64, timeout)
            if n > 0 {
                for i in 0..<Int(n) {
                    let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data[i]))
                    if fd == wakeFD {
                        var v: UInt64 = 0
                        _ = read(wakeFD, &v, 8)
                        continue
                    }
                    handlers[fd]?()
                }
            }
            let queued = tasks.withLock { q -> [@Sendable () -> Void] in
                let t = q
                q.removeAll()
                return t
            }
            for t in queued { t() }
            let now = Reactor.now()
            while let top = heap.min, top.at <= now {
                heap.popMin()
                if let body = bodies.removeValue(forKey: top.id) { body() }
            }
        }
    }
}
