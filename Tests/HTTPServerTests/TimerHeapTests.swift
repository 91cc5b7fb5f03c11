import Testing
@testable import HTTPServer

private final class Recorder: TimerTarget {
    var fired: [UInt64] = []
    func timerFired(now: UInt64) { fired.append(now) }
}

@Suite("TimerHeap")
struct TimerHeapTests {
    @Test func popsInDeadlineOrderOnlyWhenDue() {
        var h = TimerHeap()
        let targets = (0..<50).map { _ in Recorder() }
        var deadlines = Array(0..<50).map { UInt64(($0 * 7919) % 97 + 1) }
        for (t, d) in zip(targets, deadlines) { h.push(d, t) }
        #expect(h.popDue(now: 0) == nil)
        var popped: [UInt64] = []
        var now: UInt64 = 0
        while !h.isEmpty {
            now += 1
            while let t = h.popDue(now: now) {
                t.timerFired(now: now)
                popped.append(now)
            }
        }
        deadlines.sort()
        #expect(popped == deadlines)
    }
}
