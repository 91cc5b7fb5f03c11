import Foundation
import Glibc
import Testing
import TestSupport
@testable import SupervisorStore

/// The bench executable, next to the daemon binary; its `store-writer` mode is the crash test's child.
private var benchBinary: String {
    (DaemonProcess.binary as NSString).deletingLastPathComponent + "/chimerax-supervisor-bench"
}

/// `ack ID N` lines the writer printed (only whole lines: the kill may land mid-line in theory).
private func acknowledged(_ path: String) -> [(id: String, n: Int)] {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    var out: [(String, Int)] = []
    // A last line without its newline was cut by the kill: not counted.
    let whole = text.hasSuffix("\n") ? Substring(text) : text[..<(text.lastIndex(of: "\n").map { text.index(after: $0) } ?? text.startIndex)]
    for line in whole.split(separator: "\n", omittingEmptySubsequences: true) {
        let f = line.split(separator: " ")
        if f.count == 3, f[0] == "ack", let n = Int(f[2]) { out.append((String(f[1]), n)) }
    }
    return out
}

@Suite("Store crash safety")
struct CrashTests {
    @Test func killNineAtRandomMomentsLosesNothingAcknowledgedAndLeavesNothingHalfWritten() throws {
        let base = DaemonProcess.makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let dir = base + "/state"
        var total = 0
        var compactions = Set<String>()
        var torn = 0
        let rounds = 60
        for round in 0..<rounds {
            let out = base + "/acks-\(round)"
            // A small compaction threshold so kills also land during log rotation and snapshot writing.
            let child = try Child(benchBinary, ["store-writer", dir, "16", "\(64 << 10)"], environment: cleanEnvironment(), outputPath: out)
            usleep(UInt32.random(in: 30_000...250_000))
            kill(child.pid, SIGKILL)
            _ = child.wait(timeout: 10)
            let acks = acknowledged(out)
            total += acks.count

            let store = try Store(stateDirectory: dir)
            if store.recoveryReport.contains("torn") { torn += 1 }
            let state = store.state
            for (id, n) in acks {
                if n % 5 == 0 {
                    #expect(state.sessions[id] != nil, "round \(round): acknowledged session \(id) lost")
                    #expect(state.transcripts[id]?.count == 2, "round \(round): transcript of \(id) incomplete")
                } else {
                    #expect(state.users[id] == writerUser(id, n), "round \(round): acknowledged user \(id) lost or damaged")
                }
            }
            // Whatever else made it (written, not yet acknowledged) is whole: all of a write or none of it.
            for (id, s) in state.sessions {
                #expect(state.transcripts[id]?.count == 2, "round \(round): session \(id) present without both transcript entries")
                #expect(s.status == "ready")
            }
            #expect(state.transcripts.keys.allSatisfy { state.sessions[$0] != nil })
            for (id, u) in state.users {
                let n = Int(id.split(separator: "-").last!)!
                #expect(u == writerUser(id, n), "round \(round): user \(id) damaged")
            }
            for name in try FileIO.list(dir + "/store") where name.hasPrefix("snapshot-") { compactions.insert(name) }
            store.close()
        }
        print("crash test: \(rounds) kill -9 rounds, \(total) acknowledged writes checked, \(compactions.count) snapshots seen, \(torn) torn tails dropped")
        #expect(total > rounds, "the writer acknowledged almost nothing")
    }

    /// What `store-writer` writes for a user id (the same function the child uses).
    private func writerUser(_ id: String, _ n: Int) -> User {
        User(id: id, username: id, passwordHash: String(repeating: "h\(id.count)", count: 1 + n % 40), isAdmin: n % 2 == 0, createdAt: Int64(n))
    }
}
