import Testing
@testable import HTTPServer

@Suite("Event loop yield policy")
struct YieldPolicyTests {
    private let ms: UInt64 = 1_000_000

    /// Yields `count` times from `t`, each lasting `cost`, one every `every`; returns the time after the last.
    private func run(_ p: inout YieldPolicy, from t: UInt64, count: Int, cost: UInt64, every: UInt64) -> UInt64 {
        var now = t
        for _ in 0..<count {
            #expect(p.shouldYield(now: now))
            p.yielded(start: now, end: now + cost)
            now += every
        }
        return now
    }

    @Test func cheapYieldsAndALoneCostlyOneKeepYielding() {
        var p = YieldPolicy()
        // A co-located client: thousands of short yields, and a costly one now and then (two per second).
        var now: UInt64 = 10 * ms
        for _ in 0..<10 {
            now = run(&p, from: now, count: 1000, cost: 150_000, every: ms / 4)
            now = run(&p, from: now, count: 1, cost: 3 * ms, every: ms / 4)
            now = run(&p, from: now, count: 1000, cost: 40_000, every: ms / 4)
        }
        #expect(p.shouldYield(now: now))
        // A yield of exactly the threshold is not costly.
        for _ in 0..<5 {
            p.yielded(start: now, end: now + YieldPolicy.costly)
            now += ms
        }
        #expect(p.shouldYield(now: now))
    }

    @Test func enoughCostlyYieldsWithinASecondPauseForASecond() {
        var p = YieldPolicy()
        let t0: UInt64 = 5_000 * ms
        let step = 900 * ms / UInt64(YieldPolicy.costlyLimit - 1)
        // All but the last within 0.9 s: still yielding.
        for i in 0..<(YieldPolicy.costlyLimit - 1) {
            let at = t0 + UInt64(i) * step
            p.yielded(start: at, end: at + 4 * ms)
            #expect(p.shouldYield(now: at + 4 * ms))
        }
        let last = t0 + 900 * ms
        p.yielded(start: last, end: last + 3 * ms)
        #expect(!p.shouldYield(now: last + 3 * ms))
        #expect(!p.shouldYield(now: last + 3 * ms + YieldPolicy.pause - 1))
        #expect(p.shouldYield(now: last + 3 * ms + YieldPolicy.pause))
        // After the pause the count starts over: one short of the limit does not pause again, the limit does.
        var now = last + 3 * ms + YieldPolicy.pause
        for _ in 0..<(YieldPolicy.costlyLimit - 1) {
            p.yielded(start: now, end: now + 3 * ms)
            now += 10 * ms
        }
        #expect(p.shouldYield(now: now))
        p.yielded(start: now, end: now + 3 * ms)
        #expect(!p.shouldYield(now: now + 3 * ms))
    }

    @Test func costlyYieldsFurtherApartThanTheWindowDoNotAddUp() {
        var p = YieldPolicy()
        var now: UInt64 = 1_000 * ms
        for _ in 0..<20 {
            // One short of the limit in each 1.2 s: never the limit within a window.
            for k in 0..<UInt64(YieldPolicy.costlyLimit - 1) {
                p.yielded(start: now + k * 50 * ms, end: now + k * 50 * ms + 5 * ms)
            }
            #expect(p.shouldYield(now: now + 1_000 * ms))
            now += 1_200 * ms
        }
    }
}
