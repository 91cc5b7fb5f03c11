import CShim
import Glibc

/// One request to ChimeraX's REST server on the reactor, without blocking a thread: a non-blocking connect,
/// the request, the reply read to the end (HTTP/1.0: the server closes after it), bounded by a deadline and
/// a size. Reactor thread only.
public final class RESTExchange {
    public enum Outcome: Sendable {
        case reply(RESTClient.Reply)
        case timedOut
        case failed(String)
    }

    private let fd: Int32
    private let reactor: Reactor
    private let request: [UInt8]
    private var sent = 0
    private var response: [UInt8] = []
    private let maxBytes: Int
    private var timer: UInt64?
    private var completion: ((Outcome) -> Void)?
    /// Alive until it completes (timers and the descriptor's callbacks hold it weakly).
    private var keepAlive: RESTExchange?

    /// Starts `GET path` on 127.0.0.1:`port` (inside `namespace` when given); `completion` runs once, on the
    /// reactor thread.
    public static func start(port: UInt16, path: String, timeout: Double, namespace: NetworkNamespace?, reactor: Reactor,
                             maxBytes: Int = 16 << 20, completion: @escaping (Outcome) -> Void) {
        let fd: Int32
        if let namespace { fd = namespace.tcpSocket() } else { fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        guard fd >= 0 else { return completion(.failed("socket: \(String(cString: strerror(errno)))")) }
        let x = RESTExchange(fd: fd, reactor: reactor, request: Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8), maxBytes: maxBytes)
        x.completion = completion
        x.keepAlive = x
        x.begin(port: port, timeout: timeout)
    }

    private init(fd: Int32, reactor: Reactor, request: [UInt8], maxBytes: Int) {
        self.fd = fd
        self.reactor = reactor
        self.request = request
        self.maxBytes = maxBytes
    }

    private func begin(port: UInt16, timeout: Double) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        timer = reactor.schedule(at: Reactor.now() + max(0, timeout)) { [weak self] in
            self?.timer = nil
            self?.finish(.timedOut)
        }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc == 0 { return sendMore() }
        guard errno == EINPROGRESS else { return finish(.failed("connect: \(String(cString: strerror(errno)))")) }
        reactor.watch(fd, events: CSHIM_EPOLLOUT) { [weak self] in
            guard let self else { return }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { return finish(.failed("connect: \(String(cString: strerror(err)))")) }
            sendMore()
        }
    }

    private func sendMore() {
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, request.count - sent, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN {
                reactor.watch(fd, events: CSHIM_EPOLLOUT) { [weak self] in self?.sendMore() }
                return
            }
            return finish(.failed("send: \(String(cString: strerror(errno)))"))
        }
        reactor.watch(fd, events: CSHIM_EPOLLIN | CSHIM_EPOLLRDHUP) { [weak self] in self?.readMore() }
    }

    private func readMore() {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 {
                response.append(contentsOf: buf[0..<n])
                if response.count > maxBytes { return finish(.failed("reply larger than \(maxBytes) bytes")) }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            if n < 0 { return finish(.failed("recv: \(String(cString: strerror(errno)))")) }
            // End of the reply.
            guard let reply = RESTClient.parse(response) else { return finish(.failed("not an HTTP reply")) }
            return finish(.reply(reply))
        }
    }

    private func finish(_ outcome: Outcome) {
        guard let c = completion else { return }
        completion = nil
        if let t = timer { reactor.cancel(t) }
        timer = nil
        reactor.unwatch(fd)
        close(fd)
        c(outcome)
        keepAlive = nil
    }
}
