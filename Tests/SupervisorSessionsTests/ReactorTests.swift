import Foundation
import Synchronization
import Testing
@testable import SupervisorSessions

@Suite("Reactor")
struct ReactorTests {
    @Test func timersFireInTimeOrderAndCancelledOnesNever() throws {
        let r = try Reactor()
        r.start(name: "reactor-test")
        defer { r.stop() }
        let fired = Mutex<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        r.execute {
            let base = Reactor.now()
            var ids: [Int: UInt64] = [:]
            // 200 timers in shuffled order over 0.2 s; every third one cancelled.
            for k in (0..<200).shuffled() {
                ids[k] = r.schedule(at: base + Double(k) / 1000) { fired.withLock { $0.append(k) } }
            }
            for k in stride(from: 0, to: 200, by: 3) { r.cancel(ids[k]!) }
            r.schedule(at: base + 0.3) { done.signal() }
        }
        #expect(done.wait(timeout: .now() + 5) == .success)
        let got = fired.withLock { $0 }
        #expect(got == (0..<200).filter { $0 % 3 != 0 })
    }

    @Test func executeRunsOnTheReactorThreadInOrder() throws {
        let r = try Reactor()
        r.start(name: "reactor-test-2")
        defer { r.stop() }
        let seen = Mutex<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        for i in 0..<100 {
            r.execute {
                precondition(r.inReactor)
                seen.withLock { $0.append(i) }
                if i == 99 { done.signal() }
            }
        }
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(seen.withLock { $0 } == Array(0..<100))
    }
}
