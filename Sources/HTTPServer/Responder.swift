import Synchronization

/// Delivers the response to one request. May be used from any thread; the first `send` wins, later ones are
/// ignored (and counted as a bug in the log by the caller if it cares).
public final class Responder: Sendable {
    let loop: EventLoop
    /// The connection and the request generation it belongs to: a response for a connection that has since
    /// closed or moved on is dropped.
    nonisolated(unsafe) private let connection: Connection
    // nonisolated(unsafe): `connection` is only dereferenced on `loop`'s thread (see `deliver`).
    private let generation: UInt64
    private let sent = Atomic<Bool>(false)
    public let requestID: String

    init(loop: EventLoop, connection: Connection, generation: UInt64, requestID: String) {
        self.loop = loop
        self.connection = connection
        self.generation = generation
        self.requestID = requestID
    }

    /// Sends the response. Returns false if a response was already sent.
    @discardableResult
    public func send(_ response: Response) -> Bool {
        if sent.exchange(true, ordering: .acquiringAndReleasing) { return false }
        if loop.inLoop {
            connection.deliver(response, generation: generation)
        } else {
            let c = UncheckedBox(connection)
            let g = generation
            loop.execute { c.value.deliver(response, generation: g) }
        }
        return true
    }

    /// Sends a problem-details error with this request's id.
    @discardableResult
    public func send(_ problem: Problem) -> Bool { send(problem.response(requestID: requestID)) }
}

/// Carries a loop-confined reference across a thread hop to its own loop.
struct UncheckedBox<T>: @unchecked Sendable {
    // @unchecked Sendable: used only to hand a loop-confined object to a closure that runs on that same loop.
    let value: T
    init(_ value: T) { self.value = value }
}
