// swift-tools-version:6.0
import PackageDescription

// No package dependencies by design: Foundation, Dispatch, Glibc, Synchronization, the test libraries,
// and C system libraries (libsystemd; libcrypt later) only.
let package = Package(
    name: "chimerax-supervisor",
    products: [
        .executable(name: "chimerax-supervisor", targets: ["chimerax-supervisor"]),
        .executable(name: "chimerax-supervisor-bench", targets: ["chimerax-supervisor-bench"]),
    ],
    targets: [
        // libsystemd: sd_notify, sd_listen_fds_with_names, sd_journal_sendv.
        .systemLibrary(
            name: "CSystemd",
            path: "Sources/CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // libxcrypt: crypt_r and crypt_gensalt_rn (yescrypt password hashes).
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt", pkgConfig: "libcrypt", providers: [.apt(["libcrypt-dev"])]),
        // What Glibc's Swift module hides: epoll, signalfd, eventfd, SO_PEERCRED, accept4.
        .target(name: "CShim", path: "Sources/CShim"),
        // The binary min-heap the timers and expiry indexes share.
        .target(name: "MinHeap"),
        // HTTP/1.1 server on an epoll event loop. Knows nothing of ChimeraX.
        .target(name: "HTTPServer", dependencies: ["CShim", "MinHeap"]),
        // Options, their sources (flag > environment > file > default) and validation.
        .target(name: "SupervisorConfig"),
        // sd_notify, socket activation, journal and stderr logging.
        .target(name: "SystemdIntegration", dependencies: ["CSystemd", "CShim"]),
        // The durable store: checksummed append-only log, group commit, snapshots, recovery. Knows no HTTP.
        .target(name: "SupervisorStore", dependencies: ["CShim", "MinHeap"]),
        // Who may do what: users, passwords, tokens, device and anonymous sessions, rate limits, User-Agent
        // parsing. Knows no HTTP.
        .target(name: "SupervisorIdentity", dependencies: ["CCrypt", "CShim", "SupervisorStore"]),
        // ChimeraX sessions without HTTP: the lifecycle state machine, output scanning, structure rules.
        .target(name: "SupervisorSessions", dependencies: ["CShim", "MinHeap"]),
        // The application: routes, metrics, OpenAPI document, lifecycle of the daemon.
        .target(
            name: "SupervisorCore",
            dependencies: ["CShim", "HTTPServer", "SupervisorConfig", "SystemdIntegration", "SupervisorStore", "SupervisorIdentity", "SupervisorSessions"]
        ),
        // Thin executable: parses the subcommand and wires the modules.
        .executableTarget(
            name: "chimerax-supervisor",
            dependencies: ["SupervisorCore", "SupervisorConfig", "SystemdIntegration", "HTTPServer", "SupervisorStore", "SupervisorIdentity"]
        ),
        // Benchmarks that print figures (wrk against us and nginx, idle-connection RSS).
        .executableTarget(name: "chimerax-supervisor-bench", dependencies: ["CShim", "TestSupport", "SupervisorStore", "SupervisorSessions"]),

        .target(name: "TestSupport", dependencies: ["CShim", "SupervisorSessions"], path: "Tests/TestSupport"),
        .testTarget(name: "HTTPServerTests", dependencies: ["HTTPServer", "TestSupport"]),
        .testTarget(name: "SupervisorConfigTests", dependencies: ["SupervisorConfig"]),
        .testTarget(name: "SupervisorIdentityTests", dependencies: ["SupervisorIdentity", "SupervisorStore", "TestSupport"]),
        .testTarget(name: "SupervisorCoreTests", dependencies: ["SupervisorCore"]),
        .testTarget(name: "SupervisorSessionsTests", dependencies: ["SupervisorSessions", "TestSupport"]),
        .testTarget(name: "SupervisorStoreTests", dependencies: ["SupervisorStore", "CShim", "TestSupport"]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["TestSupport"],
            exclude: []
        ),
    ],
    swiftLanguageModes: [.v6]
)
