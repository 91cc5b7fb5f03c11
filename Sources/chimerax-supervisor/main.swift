import CShim
import Foundation
import Glibc
import SupervisorConfig
import SupervisorCore
import SupervisorStore
import SystemdIntegration

// Block the stop/reload signals before any thread exists, so every thread inherits the mask and they are
// read only through the daemon's signalfd.
_ = cshim_block_signals()
signal(SIGPIPE, SIG_IGN)

let usage = """
    usage: chimerax-supervisor [serve] [options]
           chimerax-supervisor config print [--json] [options]
           chimerax-supervisor state check|repair [--state-dir PATH]
           chimerax-supervisor users add NAME [--admin] [--password-stdin] | list [--json] | delete NAME | passwd NAME [--password-stdin]
           chimerax-supervisor --version | --help

    serve options (each also CHIMERAX_SUPERVISOR_<NAME> in the environment, or `name = value` in the file
    given by --config; flags win over environment, environment over file):
      --config PATH
    """

func printUsage() {
    var text = usage + "\n"
    for o in optionTable {
        let arg: String
        switch o.kind {
        case .flag: arg = ""
        case .listen: arg = " HOST:PORT|none"
        case .seconds: arg = " SECONDS"
        case .size: arg = " BYTES"
        case .count: arg = " N"
        case .percent: arg = " PERCENT"
        case .mode: arg = " MODE"
        case .choice(let c): arg = " " + c.joined(separator: "|")
        case .path: arg = " PATH"
        case .text, .list: arg = " VALUE"
        }
        let left = "  --\(o.name)\(arg)"
        text += left + String(repeating: " ", count: max(2, 44 - left.count)) + o.help + "\n"
    }
    FileHandle.standardOutput.write(Data(text.utf8))
}

func fail(_ message: String, status: Int32 = 2) -> Never {
    FileHandle.standardError.write(Data("chimerax-supervisor: \(message)\n".utf8))
    exit(status)
}

func loadConfiguration(_ args: [String]) -> Configuration {
    do {
        return try Configuration.load(arguments: args, environment: ProcessInfo.processInfo.environment,
                                      currentDirectory: FileManager.default.currentDirectoryPath,
                                      cpuCount: Int(cshim_cpu_count()))
    } catch {
        fail(error.message)
    }
}

var args = Array(CommandLine.arguments.dropFirst())
let command = args.first.flatMap { $0.hasPrefix("-") ? nil : $0 } ?? "serve"
if args.first == command { args.removeFirst() }

switch command {
case "serve":
    if args.contains("--help") || args.contains("-h") {
        printUsage()
        exit(0)
    }
    if args.contains("--version") {
        print("chimerax-supervisor \(DaemonState.version)")
        exit(0)
    }
    let config = loadConfiguration(args)
    let logger = Logger(level: Severity(name: config.logLevel) ?? .info)
    exit(Daemon(arguments: args, environment: ProcessInfo.processInfo.environment, configuration: config, logger: logger).run())
case "config":
    guard args.first == "print" else { fail("usage: chimerax-supervisor config print [--json] [options]") }
    args.removeFirst()
    let json = args.contains("--json")
    args.removeAll { $0 == "--json" }
    let config = loadConfiguration(args)
    if json {
        let items = config.entries.map { e in
            "  {\"name\": \"\(e.name)\", \"value\": \(jsonString(e.value)), \"source\": \(jsonString(e.source.description))}"
        }
        print("[\n" + items.joined(separator: ",\n") + "\n]")
    } else {
        print(config.printable())
    }
case "state":
    guard let sub = args.first, sub == "check" || sub == "repair" else {
        fail("usage: chimerax-supervisor state check|repair [--state-dir PATH]")
    }
    args.removeFirst()
    let config = loadConfiguration(args)
    exit(sub == "check" ? stateCheck(config.stateDir) : stateRepair(config.stateDir))
case "users":
    guard let sub = args.first else { fail("usage: chimerax-supervisor users add|list|delete|passwd [NAME] [options]") }
    args.removeFirst()
    let json = args.contains("--json")
    // The command's own words and flags; the rest are the usual options (--state-dir, --socket, --config…).
    let own: Set<String> = ["--admin", "--password-stdin", "--json"]
    var positional: [String] = []
    var options: [String] = []
    var i = 0
    while i < args.count {
        let a = args[i]
        if own.contains(a) {
            positional.append(a)
        } else if a.hasPrefix("--") {
            options.append(a)
            if !a.contains("="), i + 1 < args.count, !args[i + 1].hasPrefix("--"), optionSpec(named: String(a.dropFirst(2)))?.kind != .flag {
                options.append(args[i + 1])
                i += 1
            }
        } else {
            positional.append(a)
        }
        i += 1
    }
    exit(UsersCommand(config: loadConfiguration(options), json: json).run(sub, positional))
case "help":
    printUsage()
case "version":
    print("chimerax-supervisor \(DaemonState.version)")
default:
    fail("unknown command '\(command)'; try --help")
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default:
            if c.value < 0x20 { out += String(format: "\\u%04x", c.value) } else { out.unicodeScalars.append(c) }
        }
    }
    return out + "\""
}

/// `state check`: every file of the store, its records and any damage. Exit 0 when the store would open,
/// 1 when it needs `state repair`.
func stateCheck(_ dir: String) -> Int32 {
    let reports: [FileReport]
    do {
        reports = try Store.check(stateDirectory: dir)
    } catch {
        fail(error.description, status: 1)
    }
    var bad = false
    print("state directory \(dir)/store")
    if reports.isEmpty { print("  (no files: a new store)") }
    for r in reports {
        var line = "  \(r.name)  \(r.bytes) bytes  format \(r.version.map(String.init) ?? "?")  \(r.records) records"
        if let p = r.problem {
            line += "  \(r.tornTail ? "note" : "DAMAGED"): \(p) at byte \(r.damageOffset ?? 0)"
            if !r.tornTail { bad = true }
        } else {
            line += "  ok"
        }
        print(line)
    }
    if bad { print("run `chimerax-supervisor state repair --state-dir \(dir)` to keep everything before the damage (the rest is copied aside)") }
    return bad ? 1 : 0
}

/// `state repair`: keeps everything before damage, copies the rest aside. Refuses while a daemon holds the lock.
func stateRepair(_ dir: String) -> Int32 {
    do {
        let actions = try Store.repair(stateDirectory: dir)
        if actions.isEmpty { print("nothing to repair in \(dir)/store") }
        for a in actions { print(a) }
        return 0
    } catch {
        fail(error.description, status: 1)
    }
}
