import CShim
import Synchronization

/// State split into stripes, one per thread slot (`cshim_thread_slot`: the event loops, the first threads to
/// ask, each get their own), each behind its own lock and padded so that no two share a cache line. For what
/// every request updates: one shared lock or atomic was a cache line bounced between the loops' cores.
public final class Striped<State: Sendable>: Sendable {
    @usableFromInline
    final class Stripe: Sendable {
        @usableFromInline let mutex: Mutex<State>
        private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        init(_ state: State) { mutex = Mutex(state) }
    }

    @usableFromInline let stripes: [Stripe]

    public init(stripes: Int = 8, _ make: () -> State) {
        self.stripes = (0..<max(1, stripes)).map { _ in Stripe(make()) }
    }

    /// The calling thread's stripe. Inlinable, so that callers in other modules get it specialized: the
    /// generic version looked up `Mutex<State>`'s metadata at run time on every call.
    @inlinable
    public func withLock<R: Sendable>(_ body: (inout State) -> R) -> R {
        stripes[Int(cshim_thread_slot()) % stripes.count].mutex.withLock { body(&$0) }
    }

    /// Every stripe in turn (to read the whole: sum counters, merge shards).
    public func forEach(_ body: (inout State) -> Void) {
        for s in stripes { s.mutex.withLock { body(&$0) } }
    }
}
