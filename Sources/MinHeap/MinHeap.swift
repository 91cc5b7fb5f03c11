/// A binary min-heap: the one behind the HTTP event loop's timers, the store's expiry indexes and the
/// supervision reactor's timers. Inlinable, so each user gets a copy specialised for its element type.
public struct MinHeap<Element: Comparable> {
    @usableFromInline var items: [Element] = []

    @inlinable public init() {}

    @inlinable public var count: Int { items.count }
    @inlinable public var isEmpty: Bool { items.isEmpty }
    /// The smallest element, if any.
    @inlinable public var min: Element? { items.first }

    @inlinable
    public mutating func push(_ element: Element) {
        items.append(element)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[i] < items[p] else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    /// Removes and returns the smallest element.
    @inlinable
    @discardableResult
    public mutating func popMin() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        siftDown(from: 0)
        return top
    }

    /// Removes the elements `drop` selects (stale entries of a lazily cancelled heap) and restores the order.
    @inlinable
    public mutating func removeAll(where drop: (Element) -> Bool) {
        items.removeAll(where: drop)
        for i in stride(from: items.count / 2 - 1, through: 0, by: -1) { siftDown(from: i) }
    }

    @inlinable
    mutating func siftDown(from start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l] < items[m] { m = l }
            if r < items.count && items[r] < items[m] { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }
}

extension MinHeap: Sendable where Element: Sendable {}
