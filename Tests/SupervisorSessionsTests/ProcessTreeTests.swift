import Glibc
import Testing
@testable import SupervisorSessions

@Suite("/proc accounting")
struct ProcessTreeTests {
    @Test func statFieldsAreCountedFromTheLastParenthesis() throws {
        // A command name with spaces and parentheses, as a process may choose.
        let line = "4242 (a) b (c) d) S 17 4242 4242 0 -1 4194560 120 0 0 0 250 50 7 3 20 0 3 0 987654 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        let st = try #require(ProcStat.parse(Array(line.utf8)))
        #expect(st.state == UInt8(ascii: "S") && st.ppid == 17 && st.pgrp == 4242)
        #expect(st.cpuTicks == 250 + 50 + 7 + 3 && st.threads == 3 && st.start == 987654 && st.rssPages == 2048)
        #expect(!st.isZombie)
        #expect(ProcStat.parse(Array("4242 (x) Z 1 1".utf8)) == nil, "too few fields")
        #expect(ProcStat.parse(Array("no parenthesis".utf8)) == nil)
        #expect(ProcStat.parse(Array("1 (x) S 1 1 1 0 -1 0 0 0 0 0 a 0 0 0 0 0 1 0 1 1 1".utf8)) == nil, "a letter in a number field")
    }

    @Test func ourOwnStatReadsBack() throws {
        let st = try #require(ProcStat.read(getpid()))
        #expect(st.ppid == getppid() && st.threads >= 1 && st.rssPages > 0)
        let table = ProcessTable.read()
        #expect(table.entries[getpid()]?.start == st.start)
    }

    func entry(_ ppid: pid_t, _ pgrp: pid_t, start: UInt64, rss: Int = 10, state: Character = "S") -> ProcStat {
        ProcStat(state: UInt8(ascii: state.unicodeScalars.first!), ppid: ppid, pgrp: pgrp, cpuTicks: 100, threads: 2, start: start, rssPages: rss)
    }

    @Test func theTreeFollowsParentsTheGroupAndTrackedOrphans() {
        // 100 is the session (group 100): 101 its child, 102 a child that left the group (setsid), 103 a
        // grandchild under 102; 104 an orphan of the session reparented to 1 (tracked from an earlier sample);
        // 105 a stranger; 106 a zombie child; 107 a reused pid of a tracked process (another start time).
        let table = ProcessTable(entries: [
            100: entry(1, 100, start: 1000), 101: entry(100, 100, start: 1001), 102: entry(100, 102, start: 1002),
            103: entry(102, 102, start: 1003), 104: entry(1, 104, start: 1004), 105: entry(1, 105, start: 1005),
            106: entry(100, 100, start: 1006, state: "Z"), 107: entry(1, 107, start: 9999),
        ])
        let m = table.members(of: [100: 1000, 104: 1004, 107: 1007], group: 100)
        #expect(Set(m.keys) == [100, 101, 102, 103, 104])
        #expect(m[104] == 1004)
        let u = table.usage(of: m.keys)
        #expect(u.processes == 5 && u.tasks == 10 && u.rssBytes == 50 * Int(sysconf(Int32(_SC_PAGESIZE))))
    }
}
