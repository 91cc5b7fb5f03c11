import CShim
import Glibc

/// One client connection, confined to the loop that accepted it. Reads requests one at a time (pipelined
/// ones wait in the decoder), answers them in order, and enforces the header, body-idle, keep-alive and
/// write timeouts.
final class Connection: EventHandler, TimerTarget, DeferredWriter {
    enum Phase {
        case waitingHead
        case readingBody
        case handling
        /// The last response is being written; then the write side is shut and input discarded briefly.
        case closing
        case lingering
        /// A response whose body is written as it comes (`Responder.startStream`), until either side ends it.
        case streaming
        case closed
    }

    enum TimeoutKind {
        case keepAlive, header, bodyIdle, write, linger
    }

    let fd: Int32
    // unowned(unsafe): a connection is confined to its loop, which (like the server) lives until after every
    // connection has closed (drain, then `stopLoops`). Safe `unowned` cost an atomic strong-retain and release
    // on every access, a visible share of each request in profiles.
    unowned(unsafe) let loop: EventLoop
    unowned(unsafe) let server: HTTPServer
    let peer: Peer
    let listenerKind: String
    var phase: Phase = .waitingHead

    private var decoder: RequestDecoder
    private var events: UInt32 = CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP
    private var out: [UInt8] = []
    private var outIndex = 0
    private var generation: UInt64 = 0
    private var peerClosed = false
    private var readPaused = false
    private var processing = false
    private var closeAfterResponse = false
    /// A response waits in `out` for the end of the loop's turn.
    private var writeQueued = false

    // The request in progress.
    private var head: RequestHead?
    private var route: Route?
    private var params: PathParameters = [:]
    private var body: BodyAccumulator
    private var bodyLimit = 0
    private var requestID = ""
    private var requestStart: UInt64 = 0
    /// A response decided before the body was read (404, 405...), sent at `end` for bodiless requests.
    private var earlyResponse: Response?
    private var lingerBytes = 0
    /// The stream of a `.streaming` response.
    private var stream: ResponseStream?
    /// A file being sent as the rest of a streamed body (sendfile, as the socket takes it), then the end.
    private var file: (fd: Int32, offset: off_t, end: off_t)?

    // Timeouts: one deadline, at most a couple of heap entries.
    private var deadline: UInt64 = 0
    private var timeoutKind: TimeoutKind = .keepAlive
    private var queuedDeadline: UInt64 = 0
    private var headStarted = false

    init(fd: Int32, loop: EventLoop, server: HTTPServer, peer: Peer, listenerKind: String) {
        self.fd = fd
        self.loop = loop
        self.server = server
        self.peer = peer
        self.listenerKind = listenerKind
        decoder = RequestDecoder(limits: server.configuration.limits)
        body = BodyAccumulator(memoryThreshold: server.configuration.memoryBodyThreshold,
                               spoolDirectory: server.configuration.spoolDirectory)
        setDeadline(server.configuration.headerTimeout, .header)
    }

    var isIdle: Bool { phase == .waitingHead && decoder.bufferedCount == 0 && outIndex == out.count }

    // MARK: Events

    func handleEvent(_ ev: UInt32) {
        if phase == .closed { return }
        if ev & CSHIM_EPOLLERR != 0 {
            close()
            return
        }
        if ev & CSHIM_EPOLLOUT != 0 {
            flush()
            if phase == .closed { return }
        }
        if ev & (CSHIM_EPOLLIN | CSHIM_EPOLLHUP | CSHIM_EPOLLRDHUP) != 0 && !readPaused {
            readAvailable()
        }
    }

    private func readAvailable() {
        var reads = 0
        while reads < 8 {
            reads += 1
            let n = loop.readBuffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if phase == .streaming {
                    // A streaming response reads nothing more; a client that keeps sending is cut off.
                    lingerBytes += n
                    if lingerBytes > 64 << 10 { close(); return }
                    continue
                }
                if phase == .lingering {
                    lingerBytes += n
                    if lingerBytes > 1 << 20 { close(); return }
                    continue
                }
                loop.readBuffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                if n < loop.readBuffer.count { break }
            } else if n == 0 {
                peerClosed = true
                break
            } else {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN { break }
                close()
                return
            }
        }
        if phase == .lingering || phase == .streaming {
            if peerClosed { close() }
            return
        }
        process()
        if phase == .closed { return }
        if peerClosed {
            // Nothing more will come: stop reading. What was read is still answered, in order (pipelined
            // requests too); `process` closes once nothing is left. A request cut short cannot be answered.
            switch phase {
            case .handling, .closing, .waitingHead:
                setEvents(events & ~(CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP))
            default:
                close()
            }
        }
    }

    /// Turns buffered input into requests until one is in progress.
    private func process() {
        if processing { return }
        processing = true
        defer { processing = false }
        while phase == .waitingHead || phase == .readingBody {
            if out.count - outIndex > 64 * 1024 {
                // The client is not reading its responses: stop reading its requests until it does.
                pauseReading()
                break
            }
            let event: RequestDecoder.Event?
            do {
                event = try decoder.next()
            } catch {
                fail(Problem(error.status, error.code, error.message))
                return
            }
            guard let event else { break }
            switch event {
            case .head(let h): startRequest(h)
            case .body(let bytes): receiveBody(bytes)
            case .end: endRequest()
            }
        }
        switch phase {
        case .waitingHead where peerClosed:
            // The client's input has ended: close once everything read has been answered and written.
            if outIndex == out.count && !writeQueued && !readPaused { close() }
        case .waitingHead:
            if decoder.bufferedCount > 0 {
                if !headStarted {
                    headStarted = true
                    setDeadline(server.configuration.headerTimeout, .header)
                }
            } else if outIndex == out.count {
                headStarted = false
                setDeadline(server.draining ? 0.001 : server.configuration.keepAliveTimeout, .keepAlive)
            }
        case .readingBody:
            setDeadline(server.configuration.bodyIdleTimeout, .bodyIdle)
        case .handling:
            clearDeadline()
            // Bound what a pipelining client can make us buffer while a request is handled.
            if decoder.bufferedCount > server.configuration.maxBufferedInput { pauseReading() }
        default:
            break
        }
    }

    private func startRequest(_ h: RequestHead) {
        generation &+= 1
        head = h
        route = nil
        params = [:]
        earlyResponse = nil
        requestStart = loop.now
        requestID = server.requestID(from: h.headers["X-Request-ID"], loop: loop)
        if !h.keepAlive || server.draining { closeAfterResponse = true }
        phase = .readingBody
        let hasBody: Bool
        switch h.framing {
        case .none, .length(0): hasBody = false
        default: hasBody = true
        }
        switch server.router.resolve(method: h.method, path: h.path) {
        case .matched(let r, let p):
            route = r
            params = p
            bodyLimit = r.bodyLimit
            if case .length(let n) = h.framing, n > bodyLimit {
                rejectEarly(tooLarge(), hasBody: true)
                return
            }
            if h.expectContinue && hasBody {
                out.append(contentsOf: "HTTP/1.1 100 Continue\r\n\r\n".utf8)
                flush()
            }
        case .methodNotAllowed(let allow):
            if h.method == .OPTIONS {
                var resp = Response(status: 204)
                resp.headers.add("Allow", allow.joined(separator: ", "))
                rejectEarly(resp, hasBody: hasBody)
            } else {
                rejectEarly(Problem(405, "method_not_allowed", "\(h.method) is not allowed here; allowed: \(allow.joined(separator: ", ")).",
                                    headers: [("Allow", allow.joined(separator: ", "))]).response(requestID: requestID), hasBody: hasBody)
            }
        case .notFound:
            rejectEarly(Problem.notFound("No route for \(h.path).").response(requestID: requestID), hasBody: hasBody)
        }
    }

    private func tooLarge() -> Response {
        Problem(413, "payload_too_large", "The body is larger than \(bodyLimit) bytes, the limit of this route.")
            .response(requestID: requestID)
    }

    /// Answers before reading the body. With a body pending, the connection closes after the answer (the
    /// unread body is discarded by the lingering close); without one, it stays usable.
    private func rejectEarly(_ response: Response, hasBody: Bool) {
        if hasBody {
            closeAfterResponse = true
            phase = .handling
            writeResponse(response)
        } else {
            earlyResponse = response
        }
    }

    private func receiveBody(_ bytes: [UInt8]) {
        if earlyResponse != nil { return }
        do {
            try body.append(bytes)
        } catch {
            server.log(.error, "cannot spool request body", ["error": "\(error)"])
            body.discard()
            fail(Problem(503, "service_unavailable", "The request body could not be stored; try again later."))
            return
        }
        if body.count > bodyLimit {
            body.discard()
            closeAfterResponse = true
            phase = .handling
            writeResponse(tooLarge())
            return
        }
        setDeadline(server.configuration.bodyIdleTimeout, .bodyIdle)
    }

    private func endRequest() {
        guard let h = head else { return }
        phase = .handling
        if let early = earlyResponse {
            earlyResponse = nil
            writeResponse(early)
            return
        }
        guard let route else { return }
        var request = Request(head: h, body: body.finish(), peer: peer, listener: listenerKind, requestID: requestID)
        request.params = params
        request.route = route.pattern
        let responder = Responder(loop: loop, connection: self, generation: generation, requestID: requestID)
        route.handler(request, responder)
    }

    /// A protocol error: answer it and close.
    private func fail(_ problem: Problem) {
        closeAfterResponse = true
        if requestID.isEmpty { requestID = server.requestID(from: nil, loop: loop) }
        phase = .handling
        writeResponse(problem.response(requestID: requestID))
    }

    // MARK: Responses

    /// Called through `Responder` on the loop thread.
    func deliver(_ response: Response, generation g: UInt64) {
        guard g == generation, phase == .handling else { return }
        writeResponse(response)
    }

    /// Starts a streaming response: the head now (no Content-Length; the connection closes at the end), the
    /// body as `stream` is given it. Loop thread.
    func deliverStream(_ response: Response, stream: ResponseStream, generation g: UInt64) {
        guard g == generation, phase == .handling else {
            stream.connectionEnded()
            return
        }
        closeAfterResponse = true
        if head?.method == .HEAD {
            // The head only: nothing streams to a HEAD request.
            writeResponse(Response(status: response.status, headers: response.headers))
            stream.connectionEnded()
            return
        }
        self.stream = stream
        var r = response
        r.streaming = true
        writeResponse(r)
        guard phase != .closed else { return }
        phase = .streaming
        lingerBytes = 0
        clearDeadline()
        // Watch for the client going away (input is read and dropped).
        if !peerClosed { setEvents(events | CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP) }
        readPaused = false
    }

    /// More of the streamed body. A client that does not read it (more than `maxStreamBacklog` unsent) is
    /// cut off. Loop thread.
    func streamWrite(_ bytes: [UInt8], generation g: UInt64) {
        guard g == generation, phase == .streaming else { return }
        if out.count - outIndex + bytes.count > server.configuration.maxStreamBacklog {
            server.log(.warning, "closing a stream whose client does not read", ["peer": peer.description])
            close()
            return
        }
        out.append(contentsOf: bytes)
        flush()
    }

    /// The rest of a streamed body is `length` bytes of file `fd` (owned from here): sent with sendfile as the
    /// client takes it, then the stream ends. Loop thread.
    func streamFile(_ fd: Int32, length: Int, generation g: UInt64) {
        guard g == generation, phase == .streaming, file == nil else {
            Glibc.close(fd)
            return
        }
        file = (fd, 0, off_t(length))
        flush()
    }

    /// The end of a streamed body: written out, then the connection closes. Loop thread.
    func streamFinish(generation g: UInt64) {
        guard g == generation, phase == .streaming else { return }
        phase = .closing
        flush()
    }

    private func writeResponse(_ response: Response) {
        let h = head
        var response = response
        if let filter = server.configuration.responseFilter, let h { filter(h, &response) }
        let isHead = h?.method == .HEAD
        if server.draining { closeAfterResponse = true }
        server.requestCompleted(route: route?.pattern, method: h?.method ?? HTTPMethod("-"),
                                status: response.status, nanos: loop.now &- requestStart)
        var o = out
        out = []
        o.append(contentsOf: statusLine(response.status))
        var setsADefault = false
        for f in response.headers.fields {
            appendHeader(&o, f.name, f.value)
            if !setsADefault && server.isDefaultHeader(f.name) { setsADefault = true }
        }
        if setsADefault {
            for d in server.defaultHeaderBytes where !response.headers.contains(d.name) { o.append(contentsOf: d.line) }
        } else {
            o.append(contentsOf: server.defaultHeaderBlock)
        }
        if !requestID.isEmpty { appendHeader(&o, "X-Request-ID", requestID) }
        o.append(contentsOf: loop.currentDateLine())
        // A handler may announce the length of a streamed body (or of a HEAD answer) itself.
        if !response.forbidsBody && !response.streaming && !response.headers.contains("Content-Length") {
            o.append(contentsOf: "Content-Length: ".utf8)
            appendDecimal(&o, response.body.count)
            o.append(contentsOf: "\r\n".utf8)
        }
        if closeAfterResponse {
            o.append(contentsOf: "Connection: close\r\n".utf8)
        } else if h?.versionMinor == 0 {
            o.append(contentsOf: "Connection: keep-alive\r\n".utf8)
        }
        o.append(contentsOf: "\r\n".utf8)
        if !isHead && !response.forbidsBody { o.append(contentsOf: response.body) }
        out = o
        head = nil
        self.route = nil
        if response.streaming {
            // The caller moves to .streaming; nothing else is read or answered on this connection.
            phase = .handling
            flush()
            return
        }
        if closeAfterResponse {
            phase = .closing
        } else {
            phase = .waitingHead
            decoder.resume()
        }
        // Written at the end of the loop's turn, with the answers to the other sockets that were ready: each
        // send wakes the client, and sending in the middle of a turn let it preempt the loop once per request.
        if !writeQueued {
            writeQueued = true
            loop.deferWrite(self)
        }
        if phase == .waitingHead && !processing { process() }
    }

    func writeDeferred() {
        writeQueued = false
        if phase != .closed { flush() }
    }

    private func appendHeader(_ o: inout [UInt8], _ name: String, _ value: String) {
        appendFieldPart(&o, name)
        o.append(contentsOf: ": ".utf8)
        appendFieldPart(&o, value)
        o.append(contentsOf: "\r\n".utf8)
    }

    private func flush() {
        while outIndex < out.count {
            let n = out.withUnsafeBytes { cshim_send(fd, $0.baseAddress! + outIndex, out.count - outIndex) }
            if n > 0 {
                outIndex += n
                continue
            }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && e == EAGAIN {
                setEvents(events | CSHIM_EPOLLOUT)
                setDeadline(server.configuration.writeTimeout, .write)
                return
            }
            close()
            return
        }
        if var f = file, phase == .streaming {
            while f.offset < f.end {
                let n = sendfile(fd, f.fd, &f.offset, Int(min(f.end - f.offset, 1 << 20)))
                if n > 0 { continue }
                let e = errno
                if n < 0 && e == EINTR { continue }
                if n < 0 && e == EAGAIN {
                    file = f
                    setEvents(events | CSHIM_EPOLLOUT)
                    setDeadline(server.configuration.writeTimeout, .write)
                    return
                }
                // An error, or the file shrank under us: the length promised cannot be kept.
                close()
                return
            }
            Glibc.close(f.fd)
            file = nil
            phase = .closing
        }
        if out.capacity > 1 << 20 { out = [] } else { out.removeAll(keepingCapacity: true) }
        outIndex = 0
        if events & CSHIM_EPOLLOUT != 0 { setEvents(events & ~CSHIM_EPOLLOUT) }
        // A stream that caught up has no write deadline until it blocks again.
        if phase == .streaming { clearDeadline() }
        if phase == .closing {
            startLinger()
        } else if readPaused && phase != .handling {
            resumeReading()
        } else if phase == .waitingHead && peerClosed {
            process()
        } else if phase == .waitingHead && decoder.bufferedCount == 0 {
            setDeadline(server.draining ? 0.001 : server.configuration.keepAliveTimeout, .keepAlive)
        }
    }

    private func startLinger() {
        if peerClosed {
            close()
            return
        }
        // Shut our side, then read and drop what the client still sends for a moment, so the kernel does
        // not answer unread data with a reset that could destroy the response in flight (nginx's lingering close).
        shutdown(fd, Int32(SHUT_WR))
        phase = .lingering
        readPaused = false
        setEvents(CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP)
        setDeadline(2, .linger)
    }

    private func pauseReading() {
        if readPaused { return }
        readPaused = true
        setEvents(events & ~(CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP))
    }

    private func resumeReading() {
        readPaused = false
        if !peerClosed { setEvents(events | CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP) }
        process()
    }

    private func setEvents(_ e: UInt32) {
        if e == events || phase == .closed { return }
        events = e
        loop.modify(fd, events: e)
    }

    // MARK: Timeouts

    private func setDeadline(_ seconds: Double, _ kind: TimeoutKind) {
        let d = loop.now + nanos(seconds: seconds)
        deadline = d
        timeoutKind = kind
        if queuedDeadline == 0 || d < queuedDeadline {
            queuedDeadline = d
            loop.timers.push(d, self)
        }
    }

    private func clearDeadline() { deadline = 0 }

    func timerFired(now: UInt64) {
        queuedDeadline = 0
        if phase == .closed || deadline == 0 { return }
        if now < deadline {
            queuedDeadline = deadline
            loop.timers.push(deadline, self)
            return
        }
        deadline = 0
        switch timeoutKind {
        case .keepAlive, .write, .linger:
            close()
        case .header:
            if phase == .waitingHead && decoder.bufferedCount > 0 {
                fail(Problem(408, "request_timeout", "The request head did not arrive in time."))
            } else if phase == .waitingHead {
                close()
            }
        case .bodyIdle:
            if phase == .readingBody {
                body.discard()
                fail(Problem(408, "request_timeout", "The request body stalled."))
            }
        }
    }

    /// Drain: close now if nothing is in progress, else close after the current response.
    func beginDrain() {
        closeAfterResponse = true
        if phase == .streaming {
            // Streams do not end by themselves: end them (what was written goes out first).
            phase = .closing
            flush()
            return
        }
        if isIdle { close() }
    }

    func close() {
        if phase == .closed { return }
        phase = .closed
        generation &+= 1
        loop.unregister(fd)
        closeDescriptor(fd)
        body.discard()
        stream?.connectionEnded()
        stream = nil
        if let f = file {
            Glibc.close(f.fd)
            file = nil
        }
        server.connectionClosed(self)
    }
}
