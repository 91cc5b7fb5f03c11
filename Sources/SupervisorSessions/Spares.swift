import Dispatch
import Synchronization

/// Things a session start needs, made ahead of need on a background queue (network namespaces, session
/// directories), each handed out once. Taking one refills in the background: a moment later while spares
/// remain, so that making the next does not take a CPU (or the filesystem journal) from the start that took
/// one; at once when none is left. When none is spare (a burst of starts) the caller makes one on the spot.
public final class Spares<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var refilling = false
    }

    private let state = Mutex(State())
    private let target: Int
    private let refillDelay: Double
    private let make: @Sendable () -> Item?
    private let queue: DispatchQueue

    /// Keeps `target` made with `make` (nil: could not make one now; the refill stops until the next take).
    public init(label: String, target: Int, refillDelay: Double = 0.2, make: @escaping @Sendable () -> Item?) {
        self.target = max(0, target)
        self.refillDelay = refillDelay
        self.make = make
        queue = DispatchQueue(label: label, qos: .utility)
        refill(after: 0)
    }

    /// A spare, or nil when none is ready.
    public func take() -> Item? {
        let (item, left): (Item?, Int) = state.withLock { s in (s.items.popLast(), s.items.count) }
        refill(after: left > 0 ? refillDelay : 0)
        return item
    }

    /// An item taken and not used: a spare again.
    public func giveBack(_ item: Item) {
        state.withLock { $0.items.append(item) }
    }

    /// How many are ready now.
    public var count: Int { state.withLock { $0.items.count } }

    private func refill(after delay: Double) {
        let start: Bool = state.withLock { s in
            guard !s.refilling, s.items.count < target else { return false }
            s.refilling = true
            return true
        }
        guard start else { return }
        queue.asyncAfter(deadline: .now() + delay) { [self] in
            while true {
                let made = make()
                let more: Bool = state.withLock { s in
                    if let made { s.items.append(made) }
                    let more = made != nil && s.items.count < target
                    if !more { s.refilling = false }
                    return more
                }
                if !more { return }
            }
        }
    }
}
