import MinHeap

/// Something a timer can fire on. It is told the loop's current time and decides itself whether its
/// (possibly moved) deadline has come, so a deadline that moves often needs no heap surgery.
protocol TimerTarget: AnyObject {
    func timerFired(now: UInt64)
}

/// The loop's timers: (deadline, target) in a min-heap, ties in arrival order. Entries are never removed
/// early: a target whose deadline moved re-arms when its old entry fires, so each target has O(1) entries
/// outstanding.
struct TimerHeap {
    struct Entry: Comparable {
        let deadline: UInt64
        let seq: UInt64
        let target: any TimerTarget

        static func < (a: Entry, b: Entry) -> Bool { (a.deadline, a.seq) < (b.deadline, b.seq) }
        static func == (a: Entry, b: Entry) -> Bool { a.deadline == b.deadline && a.seq == b.seq }
    }

    private var heap = MinHeap<Entry>()
    private var seq: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }
    var nextDeadline: UInt64? { heap.min?.deadline }

    mutating func push(_ deadline: UInt64, _ target: any TimerTarget) {
        seq &+= 1
        heap.push(Entry(deadline: deadline, seq: seq, target: target))
    }

    /// Removes and returns the earliest entry if its deadline is at or before `now`.
    mutating func popDue(now: UInt64) -> (any TimerTarget)? {
        guard let first = heap.min, first.deadline <= now else { return nil }
        heap.popMin()
        return first.target
    }
}

/// A one-shot or repeating closure on the loop's timer heap.
final class ClosureTimer: TimerTarget {
    let body: () -> Void
    let interval: UInt64?
    /// Unowned and unchecked: a timer sits on its own loop's heap and fires only while that loop runs. (A weak
    /// reference gave every loop a side table, which made each retain of it take the slow path.)
    unowned(unsafe) let loop: EventLoop
    var cancelled = false

    init(loop: EventLoop, interval: UInt64?, body: @escaping () -> Void) {
        self.loop = loop
        self.interval = interval
        self.body = body
    }

    func timerFired(now: UInt64) {
        if cancelled { return }
        body()
        if let interval, !cancelled { loop.timers.push(now + interval, self) }
    }
}

/// A handle to cancel a scheduled closure. Use it on the loop's thread only.
public struct TimerHandle {
    let timer: ClosureTimer
    public func cancel() { timer.cancelled = true }
}
