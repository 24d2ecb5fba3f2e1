// swift-tools-version:6.0
// MobileSD: the iOS client of mobilesd bundles (manifest.json is the whole contract with the Python side).
// Layout after Apple's ml-stable-diffusion: a library (MobileSD), a command-line tool (mobilesd-ios) and
// tests with small resources; the SwiftUI app (App/) is an Xcode project generated from App/project.yml.
import Foundation
import PackageDescription

let packageDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path
let environment = ProcessInfo.processInfo.environment

// ONNX Runtime runs ONNX bundles (the runner used on Linux; on macOS opt in with MOBILESD_ONNX=1 and Homebrew's
// onnxruntime). It is a system library: C headers from the system (Debian's libonnxruntime-dev), the library
// linked from `.build/onnxruntime-lib`, a folder of links scripts/swift.sh makes to the onnxruntime wheel in the
// repository's venv (Debian's own build prints hundreds of schema errors on stderr).
#if os(Linux)
let withONNX = environment["MOBILESD_ONNX"] != "0"
#else
let withONNX = environment["MOBILESD_ONNX"] == "1"
#endif
// Linux: the headers are in /usr/include and the library comes from onnxLibDir, so pkg-config is not asked
// (the chroot has none); elsewhere it finds Homebrew's onnxruntime.
#if os(Linux)
let onnxPkgConfig: String? = nil
#else
let onnxPkgConfig: String? = "libonnxruntime"
#endif
let onnxLibDir = environment["MOBILESD_ONNXRUNTIME_LIB_DIR"] ?? "\(packageDir)/.build/onnxruntime-lib"

var targets: [Target] = [
    .target(
        name: "MobileSD",
        path: "Sources/MobileSD",
        swiftSettings: [.swiftLanguageMode(.v6)]
    ),
    .testTarget(
        name: "MobileSDTests",
        dependencies: ["MobileSD"],
        path: "Tests/MobileSDTests",
        swiftSettings: [.swiftLanguageMode(.v6)]
    ),
]
var cliDependencies: [Target.Dependency] = ["MobileSD"]

if withONNX {
    targets += [
        .systemLibrary(
            name: "COnnxRuntime",
            path: "Sources/COnnxRuntime",
            pkgConfig: onnxPkgConfig,
            providers: [.apt(["libonnxruntime-dev"]), .brew(["onnxruntime"])]
        ),
        .target(
            name: "MobileSDONNX",
            dependencies: ["MobileSD", "COnnxRuntime"],
            path: "Sources/MobileSDONNX",
            swiftSettings: [.swiftLanguageMode(.v6)],
            linkerSettings: [
                .unsafeFlags(["-L\(onnxLibDir)", "-Xlinker", "-rpath", "-Xlinker", onnxLibDir],
                             .when(platforms: [.linux])),
            ]
        ),
    ]
    cliDependencies.append("MobileSDONNX")
}

targets.append(
    .executableTarget(
        name: "mobilesd-ios",
        dependencies: cliDependencies,
        path: "Sources/mobilesd-ios",
        swiftSettings: [.swiftLanguageMode(.v6)]
    )
)

// the benchmark of the core's own per-step time (benchmarks/ios_core_overhead.py)
targets.append(
    .executableTarget(
        name: "mobilesd-ios-overhead",
        dependencies: ["MobileSD"],
        path: "Sources/mobilesd-ios-overhead",
        swiftSettings: [.swiftLanguageMode(.v6)]
    )
)

var products: [Product] = [
    .library(name: "MobileSD", targets: ["MobileSD"]),
    .executable(name: "mobilesd-ios", targets: ["mobilesd-ios"]),
]
if withONNX {
    products.append(.library(name: "MobileSDONNX", targets: ["MobileSDONNX"]))
}

let package = Package(
    name: "MobileSD",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: products,
    targets: targets
)
