import Foundation
import Glibc
import Synchronization
import Testing
@testable import SupervisorSessions

/// A one-connection-at-a-time HTTP/1.0 server like ChimeraX's, answering after `delay` seconds.
private final class TinyServer: @unchecked Sendable {
    // @unchecked Sendable: the listening descriptor is set once; the accept thread only reads it.
    let fd: Int32
    let port: UInt16

    init(delay: Double, reply: String) throws {
        let lfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(lfd, $0, len) } }
        listen(lfd, 5)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(lfd, $0, &len) } }
        fd = lfd
        port = UInt16(bigEndian: sa.sin_port)
        Thread {
            while true {
                let c = accept(lfd, nil, nil)
                if c < 0 { return }
                var buf = [UInt8](repeating: 0, count: 4096)
                _ = recv(c, &buf, buf.count, 0)
                usleep(UInt32(delay * 1e6))
                let r = Array(reply.utf8)
                _ = send(c, r, r.count, Int32(MSG_NOSIGNAL))
                close(c)
            }
        }.start()
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

@Suite("REST exchanges on the reactor")
struct RESTExchangeTests {
    func exchange(port: UInt16, timeout: Double) throws -> RESTExchange.Outcome? {
        let r = try Reactor()
        r.start(name: "rest-test")
        defer { r.stop() }
        let result = Mutex<RESTExchange.Outcome?>(nil)
        let done = DispatchSemaphore(value: 0)
        r.execute {
            RESTExchange.start(port: port, path: "/run?command=version", timeout: timeout, namespace: nil, reactor: r) { o in
                result.withLock { $0 = o }
                done.signal()
            }
        }
        _ = done.wait(timeout: .now() + 10)
        return result.withLock { $0 }
    }

    @Test func aReplyIsReadToTheEnd() throws {
        let body = #"{"json values": [null], "error": null}"#
        let s = try TinyServer(delay: 0, reply: "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
        guard case .reply(let reply)? = try exchange(port: s.port, timeout: 5) else { Issue.record("no reply"); return }
        #expect(reply.status == 200 && String(decoding: reply.body, as: UTF8.self) == body)
    }

    @Test func aSlowServerTimesOutAndARefusedConnectionFails() throws {
        let slow = try TinyServer(delay: 2, reply: "HTTP/1.0 200 OK\r\n\r\n")
        let t0 = Date()
        guard case .timedOut? = try exchange(port: slow.port, timeout: 0.3) else { Issue.record("expected a timeout"); return }
        #expect(Date().timeIntervalSince(t0) < 1.5)
        // A port nobody listens on: bound, never listened to.
        let unused = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(unused) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(unused, $0, len) } }
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(unused, $0, &len) } }
        guard case .failed? = try exchange(port: UInt16(bigEndian: sa.sin_port), timeout: 2) else { Issue.record("expected a failure"); return }
        // Not HTTP at all.
        let junk = try TinyServer(delay: 0, reply: "hello")
        guard case .failed? = try exchange(port: junk.port, timeout: 2) else { Issue.record("expected a failure"); return }
    }
}
