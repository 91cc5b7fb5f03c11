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

    @Test func threeCostlyYieldsWithinASecondPauseForASecond() {
        var p = YieldPolicy()
        let t0: UInt64 = 5_000 * ms
        p.yielded(start: t0, end: t0 + 4 * ms)
        p.yielded(start: t0 + 300 * ms, end: t0 + 304 * ms)
        #expect(p.shouldYield(now: t0 + 305 * ms))
        p.yielded(start: t0 + 900 * ms, end: t0 + 903 * ms)
        #expect(!p.shouldYield(now: t0 + 903 * ms))
        #expect(!p.shouldYield(now: t0 + 903 * ms + YieldPolicy.pause - 1))
        #expect(p.shouldYield(now: t0 + 903 * ms + YieldPolicy.pause))
        // After the pause the count starts over: two more costly yields do not pause again, a third does.
        var now = t0 + 903 * ms + YieldPolicy.pause
        p.yielded(start: now, end: now + 3 * ms)
        now += 10 * ms
        p.yielded(start: now, end: now + 3 * ms)
        #expect(p.shouldYield(now: now + 3 * ms))
        now += 10 * ms
        p.yielded(start: now, end: now + 3 * ms)
        #expect(!p.shouldYield(now: now + 3 * ms))
    }

    @Test func costlyYieldsFurtherApartThanTheWindowDoNotAddUp() {
        var p = YieldPolicy()
        var now: UInt64 = 1_000 * ms
        for _ in 0..<20 {
            // Two costly yields in each 1.2 s: never three within a window.
            p.yielded(start: now, end: now + 5 * ms)
            p.yielded(start: now + 100 * ms, end: now + 105 * ms)
            #expect(p.shouldYield(now: now + 106 * ms))
            now += 1_200 * ms
        }
    }
}
