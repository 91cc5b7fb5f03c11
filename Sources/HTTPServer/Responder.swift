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

    /// Starts a streamed response (`text/event-stream` and the like): the head of `response` now (its body
    /// is ignored), the rest through the returned stream, which ends when either side closes. Nil if a
    /// response was already sent.
    public func startStream(_ response: Response) -> ResponseStream? {
        if sent.exchange(true, ordering: .acquiringAndReleasing) { return nil }
        let stream = ResponseStream(loop: loop, connection: connection, generation: generation)
        let c = UncheckedBox(connection)
        let g = generation
        if loop.inLoop {
            connection.deliverStream(response, stream: stream, generation: g)
        } else {
            loop.execute { c.value.deliverStream(response, stream: stream, generation: g) }
        }
        return stream
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

/// The body of a streamed response, written from any thread (each write hops to the connection's loop).
public final class ResponseStream: Sendable {
    let loop: EventLoop
    nonisolated(unsafe) private let connection: Connection
    // nonisolated(unsafe): `connection` is only dereferenced on `loop`'s thread.
    private let generation: UInt64
    private let ended = Atomic<Bool>(false)
    private let onEnd = Mutex<(@Sendable () -> Void)?>(nil)

    init(loop: EventLoop, connection: Connection, generation: UInt64) {
        self.loop = loop
        self.connection = connection
        self.generation = generation
    }

    /// False once the connection has ended (the client left, the server drains, or `finish`).
    public var isOpen: Bool { !ended.load(ordering: .acquiring) }

    /// Appends to the body; false if the stream has ended.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        guard isOpen else { return false }
        let c = UncheckedBox(connection)
        let g = generation
        loop.execute { c.value.streamWrite(bytes, generation: g) }
        return true
    }

    /// The rest of the body is `length` bytes of the open file `fd` (the stream owns and closes it), sent as
    /// the client takes them; then the stream ends. Set `Content-Length` on the head to announce it.
    public func sendFile(_ fd: Int32, length: Int) {
        let c = UncheckedBox(connection)
        let g = generation
        loop.execute { c.value.streamFile(fd, length: length, generation: g) }
    }

    /// Ends the body; the connection closes once it is written.
    public func finish() {
        let c = UncheckedBox(connection)
        let g = generation
        loop.execute { c.value.streamFinish(generation: g) }
    }

    /// Called once when the stream ends, on the loop's thread (at once if it already has).
    public func onEnd(_ body: @escaping @Sendable () -> Void) {
        let runNow: Bool = onEnd.withLock { h in
            if ended.load(ordering: .acquiring) { return true }
            h = body
            return false
        }
        if runNow { body() }
    }

    /// The connection closed. Loop thread.
    func connectionEnded() {
        let h: (@Sendable () -> Void)? = onEnd.withLock { h in
            ended.store(true, ordering: .releasing)
            defer { h = nil }
            return h
        }
        h?()
    }
}
