/// Groups ChimeraX's stdout lines into log blocks for the transcript. ChimeraX (headless) prints each log
/// message as a level line (`INFO:`, `WARNING:`, `ERROR:`, `STATUS:`, `BUG:`) followed by the message's lines;
/// a block ends at the next level line or when the output pauses (`flush`). Lines before any level line
/// (the `cmd> ` prompt and the port line) are `info`.
public struct LogBlocks: Sendable {
    public struct Block: Sendable, Equatable {
        public let level: String
        public let text: String
    }

    static let levels: [String: String] = ["INFO:": "info", "WARNING:": "warning", "ERROR:": "error", "STATUS:": "status", "BUG:": "bug"]
    public private(set) var level = "info"
    private var lines: [String] = []
    private var bytes = 0
    /// A block longer than this is cut into several (a runaway message must not grow memory).
    public let maxBlockBytes: Int

    public init(maxBlockBytes: Int = 64 << 10) { self.maxBlockBytes = maxBlockBytes }

    /// One complete line; returns a block that ended with it, if any.
    public mutating func feed(_ line: String) -> Block? {
        if let l = LogBlocks.levels[line] {
            let done = flush()
            level = l
            return done
        }
        lines.append(line)
        bytes += line.utf8.count + 1
        return bytes >= maxBlockBytes ? flush() : nil
    }

    /// The block so far (the output paused); the level carries on for lines that follow.
    public mutating func flush() -> Block? {
        defer {
            lines = []
            bytes = 0
        }
        let text = lines.joined(separator: "\n")
        return text.isEmpty ? nil : Block(level: level, text: text)
    }
}
