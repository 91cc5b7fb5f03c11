import Foundation
import Glibc
import TestSupport
import Testing

/// The daemon and its state directory: the lock, damaged state, `state check|repair`, a full disk.
@Suite("State directory")
struct StateTests {
    @Test func aSecondDaemonOnTheSameStateDirectoryRefusesNamingTheHolder() throws {
        let first = try DaemonProcess()
        defer { _ = first.stop() }
        let dir = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sock = dir + "/second.sock"
        let r = try runProgram(DaemonProcess.binary, ["serve", "--listen", "127.0.0.1:0", "--socket", sock, "--state-dir", first.directory + "/state"],
                               environment: cleanEnvironment())
        #expect(r.status == 1)
        #expect(r.stderr.contains("in use by process \(first.pid)"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: sock), "nothing bound")
        // The first one is unharmed.
        #expect(try curl([first.baseURL + "/healthz"]).stdout == #"{"status":"ok"}"#)
    }

    @Test func damagedStateStopsTheStartWithFileOffsetAndTheRepairCommand() throws {
        let dir = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = dir + "/state"
        // A store with a few frames, then a flipped byte in the first: damage in the middle.
        let d = try DaemonProcess(["--state-dir", state], directory: dir)
        #expect(d.stop() == 0)
        let log = state + "/store/log-0000000000000001"
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: log)))
        #expect(bytes.count == 32, "a fresh log is its header")
        // No route writes yet (identity comes next), so the crash test's writer adds a few frames.
        let bench = (DaemonProcess.binary as NSString).deletingLastPathComponent + "/chimerax-supervisor-bench"
        let w = try Child(bench, ["store-writer", state, "1", "\(1 << 30)"], environment: cleanEnvironment(), outputPath: dir + "/acks")
        var acks = 0
        for _ in 0..<200 where acks < 3 {
            usleep(10_000)
            acks = ((try? String(contentsOfFile: dir + "/acks", encoding: .utf8)) ?? "").split(separator: "\n").count
        }
        w.signal(SIGTERM)
        _ = w.wait(timeout: 10)
        bytes = try Array(Data(contentsOf: URL(fileURLWithPath: log)))
        #expect(bytes.count > 200)
        bytes[32 + 30] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: log))

        let sock = dir + "/x.sock"
        let r = try runProgram(DaemonProcess.binary, ["serve", "--listen", "127.0.0.1:0", "--socket", sock, "--state-dir", state],
                               environment: cleanEnvironment())
        #expect(r.status == 3)
        #expect(r.stderr.contains("\(log) is damaged at byte 32"), "\(r.stderr)")
        #expect(r.stderr.contains("state repair --state-dir \(state)"))
        #expect(!FileManager.default.fileExists(atPath: sock), "nothing bound")

        let check = try runProgram(DaemonProcess.binary, ["state", "check", "--state-dir", state], environment: cleanEnvironment())
        #expect(check.status == 1)
        #expect(check.stdout.contains("DAMAGED"), "\(check.stdout)")
        let repair = try runProgram(DaemonProcess.binary, ["state", "repair", "--state-dir", state], environment: cleanEnvironment())
        #expect(repair.status == 0, "\(repair.stderr)")
        #expect(repair.stdout.contains("kept log-0000000000000001 up to byte 32"), "\(repair.stdout)")
        let again = try runProgram(DaemonProcess.binary, ["state", "check", "--state-dir", state], environment: cleanEnvironment())
        #expect(again.status == 0, "\(again.stdout)")
        let d2 = try DaemonProcess(["--state-dir", state])
        #expect(try curl([d2.baseURL + "/healthz"]).stdout == #"{"status":"ok"}"#)
        #expect(d2.stop() == 0)
    }

    @Test func readyzTurnsFalseOnAFullDiskAndBackWhenSpaceReturns() throws {
        guard geteuid() == 0 else {
            print("skipped: needs root for mount -t tmpfs")
            return
        }
        let dir = DaemonProcess.makeTempDirectory()
        let mnt = dir + "/small"
        mkdir(mnt, 0o700)
        guard try runProgram("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]).status == 0 else {
            print("skipped: mount -t tmpfs failed")
            return
        }
        defer {
            _ = try? runProgram("/bin/umount", ["-l", mnt])
            try? FileManager.default.removeItem(atPath: dir)
        }
        // Any executable satisfies the ChimeraX readiness check; this test is about the disk.
        let fake = dir + "/chimerax"
        _ = FileManager.default.createFile(atPath: fake, contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        let d = try DaemonProcess(["--state-dir", mnt + "/state", "--chimerax", fake], directory: dir)
        defer { _ = d.stop() }
        #expect(try curl(["-o", "/dev/null", "-w", "%{http_code}", d.baseURL + "/readyz"]).stdout == "200")
        // Fill the filesystem.
        let ballast = mnt + "/ballast"
        let fd = open(ballast, O_WRONLY | O_CREAT, 0o600)
        let block = [UInt8](repeating: 1, count: 4096)
        while block.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        let full = try curl(["-w", "\n%{http_code}", d.baseURL + "/readyz"])
        #expect(full.stdout.hasSuffix("\n503"), "\(full.stdout)")
        #expect(full.stdout.contains("state_store"))
        unlink(ballast)
        #expect(try curl(["-o", "/dev/null", "-w", "%{http_code}", d.baseURL + "/readyz"]).stdout == "200")
    }
}
