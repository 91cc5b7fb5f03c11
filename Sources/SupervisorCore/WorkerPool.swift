import Foundation

/// Threads for handlers that block: a durable write's fsync, password hashing, waiting for a session to stop.
///
/// These ran on a concurrent DispatchQueue. libdispatch on Linux runs about one such job per CPU plus one and
/// adds a thread about once a second while they block (measured on 2 CPUs: 300 sleeping jobs ran 3, 4, 5 at a
/// time after 0.1, 1 and 3 s), so three slow requests (a DELETE waiting out a stubborn ChimeraX's stop grace)
/// held up every login, create and GET behind them. Here a job starts at once while fewer than `maxThreads`
/// are busy, and waits in order beyond that; a thread idle for `idleExit` seconds ends.
public final class WorkerPool: @unchecked Sendable {  // every stored var is guarded by `cond`
    private let cond = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var threads = 0
    private var idle = 0
    private var made = 0
    let name: String
    let maxThreads: Int
    let idleExit: Double

    public init(name: String, maxThreads: Int, idleExit: Double = 30) {
        self.name = name
        self.maxThreads = max(1, maxThreads)
        self.idleExit = idleExit
    }

    /// Runs `job` on a pool thread.
    public func async(_ job: @escaping @Sendable () -> Void) {
        cond.lock()
        jobs.append(job)
        let grow = jobs.count - head > idle && threads < maxThreads
        if grow {
            threads += 1
            made += 1
        }
        let number = made
        cond.signal()
        cond.unlock()
        if grow {
            let t = Thread { [self] in work() }
            t.name = "\(name)-\(number)"
            t.start()
        }
    }

    /// Threads alive now, and jobs waiting for one (tests, metrics).
    public var counts: (threads: Int, waiting: Int) {
        cond.lock()
        defer { cond.unlock() }
        return (threads, jobs.count - head)
    }

    private func work() {
        cond.lock()
        while true {
            while head == jobs.count {
                idle += 1
                let woken = cond.wait(until: Date().addingTimeInterval(idleExit))
                idle -= 1
                if !woken && head == jobs.count {
                    threads -= 1
                    cond.unlock()
                    return
                }
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            cond.unlock()
            job()
            cond.lock()
        }
    }
}
