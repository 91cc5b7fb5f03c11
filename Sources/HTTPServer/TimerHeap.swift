/// Something a timer can fire on. It is told the loop's current time and decides itself whether its
/// (possibly moved) deadline has come, so a deadline that moves often needs no heap surgery.
protocol TimerTarget: AnyObject {
    func timerFired(now: UInt64)
}

/// A binary min-heap of (deadline, target). Entries are never removed early: a target whose deadline moved
/// re-arms when its old entry fires, so each target has O(1) entries outstanding.
struct TimerHeap {
    private var items: [(deadline: UInt64, seq: UInt64, target: any TimerTarget)] = []
    private var seq: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    var nextDeadline: UInt64? { items.first?.deadline }

    mutating func push(_ deadline: UInt64, _ target: any TimerTarget) {
        seq &+= 1
        items.append((deadline, seq, target))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(i, p) {
                items.swapAt(i, p)
                i = p
            } else {
                break
            }
        }
    }

    /// Removes and returns the earliest entry if its deadline is at or before `now`.
    mutating func popDue(now: UInt64) -> (any TimerTarget)? {
        guard let first = items.first, first.deadline <= now else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var m = i
                if l < items.count && less(l, m) { m = l }
                if r < items.count && less(r, m) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first.target
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        items[a].deadline < items[b].deadline || (items[a].deadline == items[b].deadline && items[a].seq < items[b].seq)
    }
}

/// A one-shot or repeating closure on the loop's timer heap.
final class ClosureTimer: TimerTarget {
    let body: () -> Void
    let interval: UInt64?
    weak var loop: EventLoop?
    var cancelled = false

    init(loop: EventLoop, interval: UInt64?, body: @escaping () -> Void) {
        self.loop = loop
        self.interval = interval
        self.body = body
    }

    func timerFired(now: UInt64) {
        if cancelled { return }
        body()
        if let interval, !cancelled, let loop { loop.timers.push(now + interval, self) }
    }
}

/// A handle to cancel a scheduled closure. Use it on the loop's thread only.
public struct TimerHandle {
    let timer: ClosureTimer
    public func cancel() { timer.cancelled = true }
}
