import CShim
import Glibc
import Synchronization

/// Something registered for readiness events on a loop.
protocol EventHandler: AnyObject {
    func handleEvent(_ events: UInt32)
}

/// Something with output to write at the end of the loop's current turn.
protocol DeferredWriter: AnyObject {
    func writeDeferred()
}

/// One thread, one epoll instance. It owns the descriptors registered with it, its timers and every
/// connection it accepted; other threads reach it only through `execute`, which queues a closure and
/// wakes it through an eventfd.
public final class EventLoop: @unchecked Sendable {
    // @unchecked Sendable: every stored property except `pending` (a Mutex) and the immutable descriptors is
    // touched only on the loop's own thread; `execute` is the only cross-thread entry point.
    public let index: Int
    let epfd: Int32
    private let wakefd: Int32
    private var handlers: [EventHandler?] = []
    private let pending = Mutex<[@Sendable () -> Void]>([])
    private let wakePending = Atomic<Bool>(false)
    var timers = TimerHeap()
    private let threadID = Atomic<Int32>(0)
    private var stopped = false
    /// The time at the start of the current turn; good enough for deadlines and logs.
    public private(set) var now: UInt64 = monotonicNanos()
    /// Shared read buffer: one per loop, since a loop reads one socket at a time.
    var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    /// Cached `Date:` header line, refreshed once a second.
    private(set) var httpDate: [UInt8] = []
    private var httpDateSecond: Int = -1
    /// Incremented on every turn; read by the watchdog from loop 0.
    public let turns = Atomic<UInt64>(0)
    /// Writers to run at the end of this turn (responses go out together, after every ready socket was read).
    private var deferredWriters: [DeferredWriter] = []
    /// Request ids issued by this loop (see `HTTPServer.requestID`). Loop thread only.
    var requestsNumbered: UInt64 = 0
    /// HTTP connections owned by this loop (counted when assigned, before the loop takes them over).
    let connectionCount = Atomic<Int>(0)

    public init(index: Int) throws(SystemCallError) {
        self.index = index
        epfd = try syscallChecked("epoll_create1") { cshim_epoll_create() }
        wakefd = try syscallChecked("eventfd") { cshim_eventfd() }
        _ = cshim_epoll_ctl(epfd, 1, wakefd, CSHIM_EPOLLIN, UInt64(wakefd))
    }

    deinit {
        closeDescriptor(epfd)
        closeDescriptor(wakefd)
    }

    /// True on the loop's own thread.
    public var inLoop: Bool { threadID.load(ordering: .relaxed) == cshim_gettid() }

    /// Runs `task` on the loop thread (soon, in order). Safe from any thread.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(task) }
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) {
            var one: UInt64 = 1
            _ = Glibc.write(wakefd, &one, 8)
        }
    }

    /// Calls `body` every `interval` seconds on this loop. Loop thread only.
    @discardableResult
    public func scheduleRepeating(every interval: Double, _ body: @escaping () -> Void) -> TimerHandle {
        let t = ClosureTimer(loop: self, interval: nanos(seconds: interval), body: body)
        timers.push(monotonicNanos() + nanos(seconds: interval), t)
        return TimerHandle(timer: t)
    }

    /// Calls `body` once after `delay` seconds. Loop thread only.
    @discardableResult
    public func schedule(after delay: Double, _ body: @escaping () -> Void) -> TimerHandle {
        let t = ClosureTimer(loop: self, interval: nil, body: body)
        timers.push(monotonicNanos() + nanos(seconds: delay), t)
        return TimerHandle(timer: t)
    }

    /// Watches a descriptor for readability with a closure. Loop thread only.
    public func watchReadable(_ fd: Int32, _ body: @escaping () -> Void) {
        register(fd, events: CSHIM_EPOLLIN, handler: ClosureHandler(body))
    }

    func register(_ fd: Int32, events: UInt32, handler: EventHandler) {
        let i = Int(fd)
        if i >= handlers.count { handlers.append(contentsOf: repeatElement(nil, count: i + 1 - handlers.count + 64)) }
        handlers[i] = handler
        _ = cshim_epoll_ctl(epfd, 1, fd, events, UInt64(fd))
    }

    func modify(_ fd: Int32, events: UInt32) {
        _ = cshim_epoll_ctl(epfd, 3, fd, events, UInt64(fd))
    }

    func unregister(_ fd: Int32) {
        _ = cshim_epoll_ctl(epfd, 2, fd, 0, 0)
        if Int(fd) < handlers.count { handlers[Int(fd)] = nil }
    }

    /// Stops `run()` after the current turn. Loop thread only (use `execute` from elsewhere).
    public func stop() { stopped = true }

    /// The loop. Returns after `stop()`.
    public func run() {
        threadID.store(cshim_gettid(), ordering: .relaxed)
        var evs = [UInt32](repeating: 0, count: 256)
        var data = [UInt64](repeating: 0, count: 256)
        while !stopped {
            now = monotonicNanos()
            var timeout: Int32 = -1
            if let next = timers.nextDeadline {
                timeout = next <= now ? 0 : Int32(min((next - now + 999_999) / 1_000_000, 60_000))
            }
            let n = evs.withUnsafeMutableBufferPointer { e in
                data.withUnsafeMutableBufferPointer { d in
                    cshim_epoll_wait(epfd, e.baseAddress, d.baseAddress, 256, timeout)
                }
            }
            now = monotonicNanos()
            turns.wrappingAdd(1, ordering: .relaxed)
            if n < 0 && errno != EINTR { preconditionFailure("epoll_wait: errno \(errno)") }
            if n > 0 {
                for i in 0..<Int(n) {
                    let fd = Int32(truncatingIfNeeded: data[i])
                    if fd == wakefd {
                        drainWakeups()
                        continue
                    }
                    if Int(fd) < handlers.count, let h = handlers[Int(fd)] { h.handleEvent(evs[i]) }
                }
            }
            while let t = timers.popDue(now: now) { t.timerFired(now: now) }
            // After a turn that sent answers, the CPU goes to whoever those answers woke (see YieldPolicy).
            // When nothing else is runnable the call returns at once.
            if runDeferredWriters() && yieldPolicy.shouldYield(now: now) {
                let start = monotonicNanos()
                sched_yield()
                yieldPolicy.yielded(start: start, end: monotonicNanos())
            }
        }
    }

    /// Loop thread only.
    private var yieldPolicy = YieldPolicy()

    /// Queues `w.writeDeferred()` for the end of this turn. Loop thread only.
    func deferWrite(_ w: DeferredWriter) { deferredWriters.append(w) }

    /// Runs the queued writers; whether there were any.
    private func runDeferredWriters() -> Bool {
        if deferredWriters.isEmpty { return false }
        while !deferredWriters.isEmpty {
            let ws = deferredWriters
            deferredWriters.removeAll(keepingCapacity: true)
            for w in ws { w.writeDeferred() }
        }
        return true
    }

    private func drainWakeups() {
        var buf: UInt64 = 0
        _ = Glibc.read(wakefd, &buf, 8)
        wakePending.store(false, ordering: .sequentiallyConsistent)
        let tasks = pending.withLock { q -> [@Sendable () -> Void] in
            let t = q
            q.removeAll(keepingCapacity: true)
            return t
        }
        for t in tasks { t() }
    }

    /// The `Date` header line for now (RFC 9110 §5.6.7 IMF-fixdate, with its CRLF), recomputed at most once a
    /// second.
    func currentDateLine() -> [UInt8] {
        var t = time_t(0)
        time(&t)
        if Int(t) != httpDateSecond {
            httpDateSecond = Int(t)
            httpDate = Array("Date: \(formatHTTPDate(Int(t)))\r\n".utf8)
        }
        return httpDate
    }
}

private final class ClosureHandler: EventHandler {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    func handleEvent(_ events: UInt32) { body() }
}

/// IMF-fixdate, e.g. `Sun, 22 Nov 2026 13:00:00 GMT`.
public func formatHTTPDate(_ epochSeconds: Int) -> String {
    var t = time_t(epochSeconds)
    var tmv = tm()
    gmtime_r(&t, &tmv)
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(days[Int(tmv.tm_wday)]), \(two(tmv.tm_mday)) \(months[Int(tmv.tm_mon)]) \(tmv.tm_year + 1900) "
        + "\(two(tmv.tm_hour)):\(two(tmv.tm_min)):\(two(tmv.tm_sec)) GMT"
}
