import CShim
import Foundation
import Glibc
import Synchronization
import Testing
import TestSupport
@testable import SupervisorSessions

/// The inode of a namespace descriptor: two descriptors hold the same namespace exactly when these agree.
private func namespaceInode(_ fd: Int32) -> UInt {
    var st = stat()
    return fstat(fd, &st) == 0 ? UInt(st.st_ino) : 0
}

@Suite("Spawning and network namespaces", .serialized)
struct SpawnTests {
    let reactor: Reactor

    init() throws {
        reactor = try Reactor()
        reactor.start(name: "spawn-tests")
    }

    /// A failure before exec (here the working directory, then the program) comes back as the child's errno:
    /// the child shares the daemon's memory until the exec, which is how it reports.
    @Test func aFailureBeforeExecIsReportedWithItsErrno() throws {
        let dir = DaemonProcess.makeTempDirectory()
        #expect {
            _ = try ChimeraXProcess(executable: "/bin/true", arguments: [], environment: [:], directory: dir + "/missing", reactor: reactor)
        } throws: { e in
            (e as? ChimeraXProcess.SpawnError)?.errno == ENOENT
        }
        #expect {
            _ = try ChimeraXProcess(executable: dir + "/no-such-program", arguments: [], environment: [:], directory: dir, reactor: reactor)
        } throws: { e in
            (e as? ChimeraXProcess.SpawnError)?.errno == ENOENT
        }
    }

    /// The child gets exactly the environment, directory, process group and standard streams asked for.
    @Test func theChildGetsItsEnvironmentDirectoryAndOwnProcessGroup() throws {
        let dir = DaemonProcess.makeTempDirectory()
        let p = try ChimeraXProcess(executable: "/bin/sh", arguments: ["-c", "set -- $(cat /proc/$$/stat); echo \"$ONLY:$(pwd):$5:${19}\"; cat"],
                                    environment: ["ONLY": "this", "PATH": "/usr/bin:/bin"], directory: dir, nice: 7, reactor: reactor)
        let lines = LinesSeen()
        p.onLine = { l, _ in lines.add(l) }
        reactor.execute { p.attach() }
        let line = try #require(lines.first(within: 10))
        #expect(line == "this:\(dir):\(p.pid):7")
        reactor.execute { p.closeStdin() }
    }

    /// Every namespace handed out is new and up (a REST server can listen on its loopback), spares come
    /// back after a take, and a process started in one is in it.
    @Test func namespacesAreFreshPerTakeAndTheChildRunsInIt() throws {
        guard NetworkNamespace.available else { return }
        let pool = NetworkNamespacePool(spares: 2)
        var seen = Set<UInt>()
        var held: [NetworkNamespace] = []
        for _ in 0..<5 {
            let ns = try #require(pool.take())
            seen.insert(namespaceInode(ns.fd))
            held.append(ns)
        }
        #expect(seen.count == 5)
        let deadline = Date().addingTimeInterval(10)
        while pool.spareCount < 2 && Date() < deadline { usleep(10_000) }
        #expect(pool.spareCount == 2)
        // A take that leaves a spare refills a moment later (not during the start it was taken for).
        let next = try #require(pool.take())
        #expect(!seen.contains(namespaceInode(next.fd)))
        #expect(pool.spareCount == 1)
        let again = Date().addingTimeInterval(10)
        while pool.spareCount < 2 && Date() < again { usleep(10_000) }
        #expect(pool.spareCount == 2)

        let ns = held[0]
        let dir = DaemonProcess.makeTempDirectory()
        let p = try ChimeraXProcess(executable: "/bin/cat", arguments: [], environment: [:], directory: dir, network: ns, reactor: reactor)
        let child = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.pid)/ns/net")
        #expect(child == "net:[\(namespaceInode(ns.fd))]")
        #expect(child != (try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")))
        // A socket made for the namespace belongs to it, and the thread that made it is back where it was.
        let before = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net")
        let s = ns.tcpSocket()
        #expect(s >= 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net") == before)
        #expect(cshim_socket_netns_inode(s) == Int64(namespaceInode(ns.fd)))
        // The thread's own namespace is held open once per thread, not once per socket: no descriptor of the
        // host's namespace left over (only these sockets open one in this test process).
        func hostNamespaceDescriptors() -> Int {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) == before }.count
        }
        let heldBefore = hostNamespaceDescriptors()
        for _ in 0..<50 {
            let t = ns.tcpSocket()
            #expect(t >= 0)
            close(t)
        }
        #expect(hostNamespaceDescriptors() == heldBefore)
        let hostSocket = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(cshim_socket_netns_inode(hostSocket) != cshim_socket_netns_inode(s))
        close(hostSocket)
        // Loopback is up inside: the socket can listen on 127.0.0.1.
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(bound == 0 && listen(s, 1) == 0)
        close(s)
        p.killAndReap()
    }
}

/// Lines a process printed, collected on the reactor thread.
private final class LinesSeen: Sendable {
    private let lines = Mutex<[String]>([])
    func add(_ l: String) { lines.withLock { $0.append(l) } }
    func first(within timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let l = lines.withLock({ $0.first }) { return l }
            usleep(10_000)
        }
        return nil
    }
}
