import Foundation
import Glibc
import Testing
import TestSupport
@testable import SupervisorStore

/// A 1 MiB tmpfs mounted on a temporary directory (root only), unmounted by `unmount()`.
struct SmallFilesystem {
    let path: String

    init?() {
        guard geteuid() == 0 else { return nil }
        path = DaemonProcess.makeTempDirectory()
        guard (try? runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", path]))?.status == 0 else { return nil }
    }

    func unmount() {
        _ = try? runProgram("/bin/umount", ["-l", path])
        rmdir(path)
    }

    /// A file of `bytes` zeros, to be deleted later to give space back.
    func ballast(_ bytes: Int) throws -> String {
        let p = path + "/ballast"
        try Data(count: bytes).write(to: URL(fileURLWithPath: p))
        return p
    }
}

@Suite("Store on a full disk")
struct DiskFullTests {
    @Test func aFullDiskFailsWritesCleanlyAndTheStoreRecoversWhenSpaceReturns() throws {
        guard let fs = SmallFilesystem() else {
            print("skipped: needs root and mount -t tmpfs (not available here)")
            return
        }
        defer { fs.unmount() }
        let dir = fs.path + "/state"
        let store = try Store(stateDirectory: dir)
        let ballast = try fs.ballast(128 << 10)
        var acked: [String] = []
        var failure: StoreError?
        // Each write is ~2 KiB; 1 MiB runs out after a few hundred.
        for n in 0..<2000 {
            let id = "u\(n)"
            do {
                try store.write([.putUser(User(id: id, username: id, passwordHash: String(repeating: "x", count: 2000), isAdmin: false, createdAt: Int64(n)))])
                acked.append(id)
            } catch {
                failure = error
                break
            }
        }
        let e = try #require(failure, "the 1 MiB filesystem never filled")
        #expect(e.code == .unavailable && e.errno == ENOSPC, "\(e)")
        #expect(!store.isHealthy)
        #expect(store.lastError?.code == .unavailable)
        // Nothing half-written: the log ends at its last good frame, and the state has exactly what was acknowledged.
        let logPath = dir + "/store/" + StoreFiles.log(1)
        let scan = LogFormat.scan(try FileIO.readAll(logPath))!
        #expect(!scan.damaged && scan.validEnd == FileIO.fileSize(logPath))
        #expect(Set(store.state.users.keys) == Set(acked))
        // Still full: another write fails the same clean way.
        #expect(throws: StoreError.self) {
            try store.write([.putUser(User(id: "late", username: "late", passwordHash: String(repeating: "y", count: 4000), isAdmin: false, createdAt: 0))])
        }
        #expect(store.state.users["late"] == nil)

        // Space comes back: the store's own probe turns it healthy again without any write from us.
        unlink(ballast)
        var waited = 0.0
        while !store.isHealthy && waited < 5 {
            usleep(100_000)
            waited += 0.1
        }
        #expect(store.isHealthy, "the store did not notice that space returned")
        try store.write([.putUser(User(id: "after", username: "after", passwordHash: "z", isAdmin: false, createdAt: 0))])
        store.close()
        let reopened = try Store(stateDirectory: dir)
        #expect(Set(reopened.state.users.keys) == Set(acked + ["after"]))
        reopened.close()
    }
}
