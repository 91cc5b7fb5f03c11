import Glibc

/// Which ChimeraX commands a user may send (API.md §4, chimerax.md "Commands that must not reach ChimeraX"):
/// an allow-list of command names, every part of a request split by `;` checked, and the arguments of
/// `open` and `save` held to the session directory and to structure, image and session files.
///
/// Conservative by construction: anything the rules do not recognise is refused. Wrapping commands (`alias`,
/// `perframe`, `time`) and code runners can never be allowed, even by configuration, because they would
/// carry a command past this check.
public struct CommandPolicy: Sendable {
    public static let defaultAllowed: Set<String> = [
        "open", "close", "show", "hide", "view", "style", "color", "rainbow", "cartoon", "surface", "label", "lighting",
        "material", "graphics", "set", "transparency", "turn", "move", "zoom", "clip", "cofr", "select", "info", "measure",
        "distance", "angle", "hbonds", "contacts", "align", "matchmaker", "split", "combine", "rename", "delete", "size",
        "windowsize", "wait", "pwd", "version", "save",
    ]
    /// Never allowed: they run code, install software, control the REST server or the process, change the
    /// working directory, or wrap other commands.
    public static let neverAllowed: Set<String> = [
        "alias", "perframe", "time", "runscript", "pip", "toolshed", "devel", "remotecontrol", "mcp", "meeting", "debug", "ui",
        "tool", "help", "exit", "quit", "cd", "shell", "pyscript", "python", "runpython", "log", "snapshot", "movie", "script",
    ]
    /// Structure and session files `open` may read (chimerax.md "Structures").
    public static let openSuffixes = [".pdb", ".pdb1", ".ent", ".pqr", ".cif", ".mmcif", ".mmtf", ".mol2", ".sdf", ".mol", ".gro", ".pdbqt",
                                      ".pdb.gz", ".ent.gz", ".pqr.gz", ".pdbqt.gz", ".cxs"]
    public static let openFormats: Set<String> = ["pdb", "mmcif", "cif", "mmtf", "mol2", "sdf", "gro", "pdbqt", "pqr", "session"]
    static let openKeywords: Set<String> = ["format", "name", "maxmodels", "coordsets", "autostyle", "loginfo"]
    /// Images and session files `save` may write.
    public static let saveSuffixes = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".cxs"]
    public static let saveFormats: Set<String> = ["png", "jpeg", "jpg", "tiff", "tif", "bmp", "gif", "ppm", "session"]
    static let saveKeywords: Set<String> = ["format", "width", "height", "supersample", "pixelsize", "transparentbackground", "quality",
                                            "includemaps"]
    /// Keywords of other commands that read or write files (`info … saveFile`, `hbonds … saveFile`, `log`…).
    static let fileKeywords: Set<String> = ["savefile", "logfile", "file", "filename", "path", "save", "script", "outfile", "output"]

    public struct Refusal: Error, Equatable, Sendable {
        /// The part of the request refused (one command of a `;` list).
        public let command: String
        public let reason: String
    }

    public let allowed: Set<String>

    public init(allowed: Set<String> = CommandPolicy.defaultAllowed) {
        self.allowed = allowed.subtracting(CommandPolicy.neverAllowed)
    }

    /// Checks every command of `text` for a ChimeraX running in `directory`; nil when all may run.
    public func check(_ text: String, directory: String) -> Refusal? {
        if text.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
            return Refusal(command: text, reason: "control characters (line breaks included) are not allowed in a command")
        }
        for raw in text.split(separator: ";", omittingEmptySubsequences: false) {
            let part = raw.trimmingWhitespace()
            if part.isEmpty { continue }
            if let reason = checkOne(part, directory: directory) { return Refusal(command: part, reason: reason) }
        }
        return nil
    }

    /// A reason to refuse one command, or nil.
    func checkOne(_ command: String, directory: String) -> String? {
        guard let tokens = CommandPolicy.tokenize(command), let first = tokens.first else { return "quotes must enclose whole words" }
        let name = first.text.lowercased()
        guard !first.quoted, name.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }) else {
            return "'\(first.text)' is not a command name"
        }
        guard allowed.contains(name) else { return "'\(name)' is not on the command allow-list" }
        let args = Array(tokens.dropFirst())
        switch name {
        case "open": return checkOpen(args, directory: directory)
        case "save": return checkSave(args, directory: directory)
        default:
            if let k = args.first(where: { CommandPolicy.fileKeywords.contains($0.text.lowercased()) }) {
                return "the '\(k.text)' option reads or writes files; only open and save may"
            }
            return nil
        }
    }

    func checkOpen(_ args: [Token], directory: String) -> String? {
        var sources = 0
        var i = 0
        while i < args.count {
            let t = args[i]
            let lower = t.text.lowercased()
            if CommandPolicy.openKeywords.contains(lower) {
                guard i + 1 < args.count else { return "'\(t.text)' needs a value" }
                if lower == "format" && !CommandPolicy.openFormats.contains(args[i + 1].text.lowercased()) {
                    return "open may read structure and session formats only, not '\(args[i + 1].text)'"
                }
                i += 2
                continue
            }
            if CommandPolicy.isPDBSource(lower) {
                sources += 1
            } else {
                if let r = CommandPolicy.fileProblem(t.text, suffixes: CommandPolicy.openSuffixes, directory: directory, what: "open") { return r }
                sources += 1
            }
            i += 1
        }
        return sources == 0 ? "open needs a PDB id or a file of the session" : nil
    }

    func checkSave(_ args: [Token], directory: String) -> String? {
        guard let target = args.first else { return "save needs a file name" }
        if let r = CommandPolicy.fileProblem(target.text, suffixes: CommandPolicy.saveSuffixes, directory: directory, what: "save") { return r }
        var i = 1
        while i < args.count {
            let k = args[i].text.lowercased()
            guard CommandPolicy.saveKeywords.contains(k), i + 1 < args.count else {
                return "save takes a file name and the options \(CommandPolicy.saveKeywords.sorted().joined(separator: ", ")) only"
            }
            if k == "format" && !CommandPolicy.saveFormats.contains(args[i + 1].text.lowercased()) {
                return "save may write images and session files only, not '\(args[i + 1].text)'"
            }
            i += 2
        }
        return nil
    }

    /// `1abc`, `pdb_00001abc`, `pdb:1abc`, `pdb:pdb_00001abc`.
    static func isPDBSource(_ s: String) -> Bool {
        let id = s.hasPrefix("pdb:") ? String(s.dropFirst(4)) : s
        return StructureRules.pdbIDForOpen(id) != nil
    }

    /// Why `path` may not be read or written by `what`: it must name a file directly in the session
    /// directory (a plain name, or the directory's own absolute path and a name), not hidden, with one of
    /// `suffixes`, and not a symbolic link.
    static func fileProblem(_ path: String, suffixes: [String], directory: String, what: String) -> String? {
        var name = path
        if path.hasPrefix("/") {
            guard path.hasPrefix(directory + "/") else { return "\(what) may use files of the session directory only" }
            name = String(path.dropFirst(directory.count + 1))
        }
        if name.contains("://") || name.lowercased().hasPrefix("http:") || name.lowercased().hasPrefix("ftp:") { return "\(what) may not use URLs" }
        guard !name.isEmpty, !name.contains("/"), !name.contains("\\"), !name.hasPrefix("."), !name.hasPrefix("~"),
            !name.contains(where: { "*?[]{}$`".contains($0) })
        else { return "\(what) may use plain file names in the session directory only ('\(path)')" }
        let lower = name.lowercased()
        guard suffixes.contains(where: { lower.hasSuffix($0) && lower.count > $0.count }) else {
            return "\(what) may use \(suffixes.joined(separator: " ")) files only, not '\(name)'"
        }
        var st = stat()
        if lstat(directory + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK { return "'\(name)' is a symbolic link" }
        return nil
    }

    struct Token: Equatable {
        let text: String
        let quoted: Bool
    }

    /// Splits on blanks; a single or double quote at the start of a word groups up to the same quote and a
    /// blank or the end (as ChimeraX reads it). A quote anywhere else makes the command refused (nil): two
    /// readings of one command must not be possible. Nil also for an unterminated quote. Keywords are
    /// matched whether quoted or not.
    static func tokenize(_ s: String) -> [Token]? {
        var out: [Token] = []
        let chars = Array(s)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == " " || c == "\t" {
                i += 1
                continue
            }
            if c == "\"" || c == "'" {
                var j = i + 1
                while j < chars.count && chars[j] != c { j += 1 }
                guard j < chars.count else { return nil }
                // The closing quote must end the word.
                guard j + 1 == chars.count || chars[j + 1] == " " || chars[j + 1] == "\t" else { return nil }
                out.append(Token(text: String(chars[(i + 1)..<j]), quoted: true))
                i = j + 1
                continue
            }
            var j = i
            while j < chars.count && chars[j] != " " && chars[j] != "\t" {
                if chars[j] == "\"" || chars[j] == "'" { return nil }
                j += 1
            }
            out.append(Token(text: String(chars[i..<j]), quoted: false))
            i = j
        }
        return out
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
