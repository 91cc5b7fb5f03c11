import Foundation
import Synchronization
import Testing
@testable import SupervisorCore

@Suite("Worker pool")
struct WorkerPoolTests {
    /// Waits up to 10 s for `condition`.
    private func eventually(_ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while !condition() && Date() < deadline { usleep(2_000) }
        return condition()
    }

    @Test func blockingJobsAllRunAtOnceUpToTheLimitThenQueueInOrder() {
        let pool = WorkerPool(name: "test", maxThreads: 40)
        let gate = DispatchSemaphore(value: 0)
        let running = Atomic<Int>(0)
        for _ in 0..<40 {
            pool.async {
                running.add(1, ordering: .relaxed)
                gate.wait()
            }
        }
        #expect(eventually { running.load(ordering: .relaxed) == 40 }, "\(running.load(ordering: .relaxed)) of 40 running")
        // Beyond the limit, jobs wait, and start in the order they came as threads free up.
        let order = Mutex<[Int]>([])
        for i in 0..<5 { pool.async { order.withLock { $0.append(i) } } }
        usleep(50_000)
        #expect(order.withLock { $0 }.isEmpty && pool.counts.waiting == 5 && pool.counts.threads == 40)
        gate.signal()
        #expect(eventually { order.withLock { $0 }.count == 5 })
        #expect(order.withLock { $0 } == [0, 1, 2, 3, 4])
        for _ in 0..<39 { gate.signal() }
        #expect(eventually { pool.counts.waiting == 0 })
    }

    @Test func idleThreadsEnd() {
        let pool = WorkerPool(name: "test", maxThreads: 8, idleExit: 0.2)
        let gate = DispatchSemaphore(value: 0)
        let done = Atomic<Int>(0)
        for _ in 0..<6 {
            pool.async {
                gate.wait()
                done.add(1, ordering: .relaxed)
            }
        }
        #expect(eventually { pool.counts.threads == 6 })
        for _ in 0..<6 { gate.signal() }
        #expect(eventually { done.load(ordering: .relaxed) == 6 })
        #expect(eventually { pool.counts.threads == 0 })
        // And it starts threads again afterwards.
        let again = Atomic<Bool>(false)
        pool.async { again.store(true, ordering: .relaxed) }
        #expect(eventually { again.load(ordering: .relaxed) })
    }
}
