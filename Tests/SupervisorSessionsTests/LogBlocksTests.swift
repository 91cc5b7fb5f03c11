import Testing
@testable import SupervisorSessions

@Suite("ChimeraX log blocks")
struct LogBlocksTests {
    @Test func levelLinesStartBlocksAndAPauseEndsOne() {
        var b = LogBlocks()
        // The start of a session: the prompt and port line, then an INFO block of two lines.
        #expect(b.feed("cmd> REST server started on host 127.0.0.1 port 41234") == nil)
        #expect(b.feed("INFO:") == .init(level: "info", text: "cmd> REST server started on host 127.0.0.1 port 41234"))
        #expect(b.feed("REST server started on host 127.0.0.1 port 41234") == nil)
        #expect(b.feed("Visit http://127.0.0.1:41234/cmdline.html for CLI interface") == nil)
        #expect(b.feed("WARNING:") == .init(level: "info", text: "REST server started on host 127.0.0.1 port 41234\nVisit http://127.0.0.1:41234/cmdline.html for CLI interface"))
        #expect(b.feed("Unknown thing") == nil)
        #expect(b.flush() == .init(level: "warning", text: "Unknown thing"), "the output paused")
        #expect(b.flush() == nil, "nothing twice")
        // A block split by a pause keeps its level.
        #expect(b.feed("more of it") == nil)
        #expect(b.flush() == .init(level: "warning", text: "more of it"))
        for (line, level) in [("ERROR:", "error"), ("STATUS:", "status"), ("BUG:", "bug"), ("INFO:", "info")] {
            #expect(b.feed(line) == nil)
            #expect(b.feed("x") == nil)
            #expect(b.flush()?.level == level)
        }
        // Not a level line: "INFO: text" on one line is text.
        #expect(b.feed("INFO: inline") == nil)
        #expect(b.flush()?.text == "INFO: inline")
    }

    @Test func aRunawayMessageIsCutIntoBoundedBlocks() {
        var b = LogBlocks(maxBlockBytes: 100)
        var blocks: [LogBlocks.Block] = []
        for i in 0..<50 { if let x = b.feed("line \(i) of a long message") { blocks.append(x) } }
        if let x = b.flush() { blocks.append(x) }
        #expect(blocks.count > 5)
        #expect(blocks.allSatisfy { $0.text.utf8.count < 100 + 30 })
        #expect(blocks.map(\.text).joined(separator: "\n") == (0..<50).map { "line \($0) of a long message" }.joined(separator: "\n"), "nothing lost")
    }
}
